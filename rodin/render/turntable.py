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
from rodin.render.volume import occupancy_from_density, render_views
from rodin.triplane.decoder import TriplaneDecoder

VIDEO_SUFFIXES = (".mp4", ".gif")
IMAGE_SUFFIXES = (".png",)


def render_turntable(planes: torch.Tensor, decoder: TriplaneDecoder, render: RenderConfig, *, frames: int,
                     resolution: int, elevation: float = 10.0, progress: bool = False) -> np.ndarray:
    """(frames, H, W, 3) uint8 frames of the avatar turning once around the y axis."""
    occupancy = occupancy_from_density(planes, decoder, resolution=render.occupancy_resolution,
                                       threshold=render.occupancy_threshold)
    c2w = turntable_cameras(frames, elevation_deg=elevation)
    rgb, _, _ = render_views(planes, decoder, c2w, DEFAULT_FOV_X, resolution, samples=render.samples,
                             importance=render.importance, occupancy=occupancy, background=render.background,
                             progress=progress)
    return to_uint8(rgb.numpy())


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
