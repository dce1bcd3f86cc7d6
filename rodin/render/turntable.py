"""Turntable videos and view grids of a tri-plane."""

from __future__ import annotations

import io
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from rodin.config import RenderConfig
from rodin.errors import RodinError
from rodin.io import png_bytes, to_uint8, write_atomic
from rodin.render.cameras import DEFAULT_FOV_X, turntable_cameras
from rodin.render.volume import occupancy_from_density, render_views, render_with_features
from rodin.triplane.decoder import TriplaneDecoder

VIDEO_SUFFIXES = (".mp4", ".gif")
IMAGE_SUFFIXES = (".png",)


def render_turntable(planes: torch.Tensor, decoder: TriplaneDecoder, render: RenderConfig, *, frames: int,
                     resolution: int, elevation: float = 10.0, progress: bool = False,
                     refiner=None) -> np.ndarray:
    """(frames, H, W, 3) uint8 frames of the avatar turning once around the y axis.

    With a `refiner` (stage 4, rodin.refine.network.Refiner) whose scale divides `resolution`, the views
    are volume-rendered that many times smaller and the refiner enlarges them: 1/scale² of the rays.
    """
    c2w = turntable_cameras(frames, elevation_deg=elevation)
    if refiner is not None and resolution % refiner.config.scale == 0:
        return to_uint8(refined_views(planes, decoder, render, c2w, resolution=resolution, refiner=refiner))
    occupancy = occupancy_from_density(planes, decoder, resolution=render.occupancy_resolution,
                                       threshold=render.occupancy_threshold)
    rgb, _, _ = render_views(planes, decoder, c2w, DEFAULT_FOV_X, resolution, samples=render.samples,
                             importance=render.importance, occupancy=occupancy, background=render.background,
                             progress=progress)
    return to_uint8(rgb.numpy())


@torch.no_grad()
def refined_views(planes: torch.Tensor, decoder: TriplaneDecoder, render: RenderConfig, c2w: torch.Tensor, *,
                  resolution: int, refiner, chunk: int = 8) -> np.ndarray:
    """(V, R, R, 3) float views in [0, 1]: renders at R / scale, enlarged by the refiner."""
    low = resolution // refiner.config.scale
    inputs = render_with_features(planes, decoder, c2w, DEFAULT_FOV_X, low, render=render)
    if inputs.shape[1] != refiner.config.in_channels:
        raise RodinError(f"the refiner reads {refiner.config.in_channels} channels but this decoder renders "
                         f"{inputs.shape[1]}; they were not trained together")
    device = next(refiner.parameters()).device
    refined = torch.cat([refiner.refine(part.to(device)).cpu() for part in inputs.split(chunk)])
    return refined.permute(0, 2, 3, 1).numpy()


def grid(images: np.ndarray, columns: int) -> np.ndarray:
    n, h, w, c = images.shape
    rows = -(-n // columns)
    sheet = np.full((rows * h, columns * w, c), 255, dtype=np.uint8)
    for k in range(n):
        r, col = divmod(k, columns)
        sheet[r * h:(r + 1) * h, col * w:(col + 1) * w] = images[k]
    return sheet


def write_frames(frames: np.ndarray, out: Path, *, fps: int = 24) -> None:
    """A video (.mp4, .gif) or a grid of the frames (.png), written atomically."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".png":
        write_atomic(out, png_bytes(grid(frames, min(8, len(frames)))))
        return
    if suffix not in VIDEO_SUFFIXES:
        raise RodinError(f"{out}: unknown output type {suffix!r}; use .mp4, .gif or .png")
    buffer = io.BytesIO()
    if suffix == ".gif":
        iio.imwrite(buffer, frames, extension=".gif", duration=1000 / fps, loop=0)
    else:
        _write_mp4(buffer, frames, fps)
    write_atomic(out, buffer.getvalue())


def _write_mp4(buffer: io.BytesIO, frames: np.ndarray, fps: int) -> None:
    """H.264 in yuv420p (plays everywhere) through imageio's ffmpeg, via a temporary file."""
    import tempfile

    import imageio.v2 as iio2

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "video.mp4"
        writer = iio2.get_writer(str(path), fps=fps, codec="libx264", quality=8, pixelformat="yuv420p",
                                 macro_block_size=1, ffmpeg_log_level="error")
        for frame in frames:
            writer.append_data(frame)
        writer.close()
        buffer.write(path.read_bytes())
