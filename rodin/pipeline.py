"""`RodinPipeline`: a model folder in, avatars out.

    pipe = RodinPipeline.from_pretrained("models/small")
    avatar = pipe(image="portrait.png", seed=0)       # or pipe(seed=3) for an unconditional one
    avatar.save("out/avatar.safetensors"); frames = avatar.turntable(); mesh = avatar.mesh()

A model folder holds `model_index.json` (which component lives where, and the render settings)
and one folder per component (config.json + model.safetensors). Components that a stage has not
trained yet are simply absent, and asking for what they provide fails with a clear message.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from rodin.config import BaseModelConfig, DecoderConfig, RenderConfig, from_dict
from rodin.errors import ConfigError, DataError
from rodin.io import write_atomic, write_json

INDEX = "model_index.json"
SHEET_AZIMUTHS = (0.0, 45.0, 90.0, 180.0)
AVATAR_FORMAT = "rodin-avatar/1"


@dataclass
class Avatar:
    """One generated (or fitted) avatar: its tri-plane and the decoder that reads it."""

    planes: torch.Tensor                      # (3, C, H, W)
    decoder: Any                              # TriplaneDecoder
    render_config: RenderConfig
    info: dict = field(default_factory=dict)  # how it was made (seed, input image, guidance, model)

    def views(self, *, count: int = 8, resolution: int = 128, elevation: float = 10.0) -> np.ndarray:
        """(count, R, R, 3) uint8 views evenly spaced around the avatar, the first from the front."""
        from rodin.render.turntable import render_turntable

        return render_turntable(self.planes, self.decoder, self.render_config, frames=count, resolution=resolution,
                                elevation=elevation)

    def turntable(self, *, frames: int = 48, resolution: int = 128, elevation: float = 10.0) -> np.ndarray:
        return self.views(count=frames, resolution=resolution, elevation=elevation)

    def mesh(self, *, resolution: int = 128):
        """A coloured trimesh.Trimesh from marching cubes on the density (small floaters removed)."""
        from rodin.render.mesh import extract_mesh

        return extract_mesh(self.planes, self.decoder, resolution=resolution)

    def save(self, path: Path | str) -> Path:
        """A self-contained avatar file: the tri-plane, and the decoder's weights and config beside it."""
        path = Path(path)
        tensors = {"planes": self.planes.detach().float().contiguous().cpu()}
        tensors.update({f"decoder.{k}": v.detach().contiguous().cpu() for k, v in self.decoder.state_dict().items()})
        metadata = {
            "format": AVATAR_FORMAT,
            "decoder_config": json.dumps(asdict(self.decoder.config)),
            "render_config": json.dumps(asdict(self.render_config)),
            "info": json.dumps(self.info),
        }
        write_atomic(path, save(tensors, metadata=metadata))
        return path

    @classmethod
    def load(cls, path: Path | str) -> Avatar:
        from safetensors import safe_open

        from rodin.triplane.decoder import TriplaneDecoder

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: avatar file not found")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise DataError(f"{path}: not an avatar file ({err})") from None
        if metadata.get("format") != AVATAR_FORMAT or "planes" not in tensors:
            raise DataError(f"{path}: not a rodin avatar (expected format {AVATAR_FORMAT!r})")
        try:
            decoder = TriplaneDecoder(from_dict(DecoderConfig, json.loads(metadata["decoder_config"])))
            render = from_dict(RenderConfig, json.loads(metadata["render_config"]))
            info = json.loads(metadata.get("info", "{}"))
            decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
        except (KeyError, ValueError, RuntimeError, ConfigError) as err:
            raise DataError(f"{path}: damaged avatar file ({err})") from None
        planes = tensors["planes"]
        if planes.ndim != 4 or planes.shape[0] != 3 or planes.shape[1] != decoder.config.features:
            raise DataError(f"{path}: planes of shape {tuple(planes.shape)} do not fit its decoder")
        if not torch.isfinite(planes).all():
            raise DataError(f"{path}: the tri-plane holds NaN or infinity")
        return cls(planes, decoder.eval(), render, info)


def write_model_index(folder: Path, *, render: RenderConfig, preset: str, components: dict[str, str]) -> None:
    """Record (or update) which components a model folder holds."""
    path = Path(folder) / INDEX
    index = json.loads(path.read_text()) if path.is_file() else {}
    index.update({"_class_name": "RodinPipeline", "preset": preset, "render": asdict(render)})
    index.setdefault("components", {}).update(components)
    write_json(path, index)


class RodinPipeline:
    """Generation from a model folder. Keyword-only calls; see the module docstring."""

    def __init__(self, *, decoder, render: RenderConfig, base=None, encoder=None, path: Path | None = None) -> None:
        self.decoder = decoder.eval()
        self.render = render
        self.base = base.eval() if base is not None else None
        self.encoder = encoder
        self.path = path

    @classmethod
    def from_pretrained(cls, path: Path | str) -> RodinPipeline:
        from rodin.diffusion.base import KIND as BASE_KIND
        from rodin.diffusion.base import BaseDiffusion
        from rodin.fit.run import DECODER_KIND
        from rodin.modeling import load_component
        from rodin.semantic.pixel_encoder import KIND as LATENT_KIND
        from rodin.semantic.pixel_encoder import PixelEncoder, PixelEncoderConfig
        from rodin.triplane.decoder import TriplaneDecoder

        path = Path(path)
        index_path = path / INDEX
        if not index_path.is_file():
            raise DataError(f"{path}: not a model folder (no {INDEX}); train one with `rodin train base`")
        try:
            index = json.loads(index_path.read_text())
            components = index["components"]
            render = from_dict(RenderConfig, index["render"])
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{index_path}: malformed model index ({err})") from None

        def part(name: str) -> Path | None:
            folder = components.get(name)
            return path / folder if folder else None

        if part("decoder") is None:
            raise DataError(f"{index_path}: names no decoder")
        decoder = load_component(TriplaneDecoder, DecoderConfig, part("decoder"), kind=DECODER_KIND)
        base = encoder = None
        if part("base") is not None:
            base = load_component(BaseDiffusion, BaseModelConfig, part("base"), kind=BASE_KIND)
        if part("latent") is not None:
            encoder = load_component(PixelEncoder, PixelEncoderConfig, part("latent"), kind=LATENT_KIND)
        return cls(decoder=decoder, render=render, base=base, encoder=encoder, path=path)

    def encode_image(self, image: Path | str | np.ndarray | torch.Tensor) -> torch.Tensor:
        """z (1, D) of a portrait: a file, an (H, W, 3|4) uint8/float array, or a (3, S, S) tensor."""
        from rodin.semantic.pixel_encoder import load_portrait, portrait_from_array

        if self.encoder is None:
            raise DataError(f"{self.path}: this model has no image encoder; generate with a seed instead")
        size = self.encoder.config.image_size
        if isinstance(image, (str, Path)):
            pixels = load_portrait(image, size=size)
        else:
            pixels = portrait_from_array(image, size=size)
        with torch.no_grad():
            return self.encoder(pixels[None])

    @torch.no_grad()
    def __call__(self, *, image: Path | str | np.ndarray | torch.Tensor | None = None, prompt: str | None = None,
                 edit: str | None = None, strength: float = 1.0, seed: int = 0, guidance_scale: float | None = None,
                 steps: int | None = None, sampler: str | None = None) -> Avatar:
        """One avatar: from a portrait (`image`), or unconditionally (no image) from `seed`."""
        if prompt is not None or edit is not None:
            raise ConfigError("text prompts and edits need the semantic text encoder, which this model does not "
                              "have yet; generate from --image or --seed")
        if self.base is None:
            raise DataError(f"{self.path}: this model has no base diffusion model; train one with "
                            "`rodin train base`")
        latent = self.encode_image(image) if image is not None else None
        generator = torch.Generator().manual_seed(int(seed))
        planes = self.base.sample(latent, count=1, steps=steps, guidance_scale=guidance_scale, sampler=sampler,
                                  generator=generator)
        if not torch.isfinite(planes).all():
            raise DataError("sampling produced NaN or infinity; try another seed or fewer guidance")
        info = {"seed": int(seed), "image": str(image) if isinstance(image, (str, Path)) else None,
                "guidance_scale": guidance_scale if guidance_scale is not None
                else self.base.config.diffusion.guidance_scale,
                "steps": steps or self.base.config.diffusion.sample_steps, "model": str(self.path)}
        return Avatar(planes[0], self.decoder, self.render, info)



def sample_sheet(pipe: RodinPipeline, portraits: list[Path | None], *, seed: int = 0, resolution: int = 64,
                 guidance_scale: float | None = None) -> np.ndarray:
    """A contact sheet, one row per entry: the portrait (blank for None: unconditional), then the avatar
    sampled from it (seed + row) seen from `SHEET_AZIMUTHS`."""
    from rodin.io import to_uint8
    from rodin.render.turntable import grid
    from rodin.semantic.pixel_encoder import load_portrait
    from rodin.train.base import render_planes

    tiles = []
    for row, portrait in enumerate(portraits):
        avatar = pipe(image=portrait, seed=seed + row, guidance_scale=guidance_scale)
        if portrait is None:
            tiles.append(np.full((resolution, resolution, 3), 255, np.uint8))
        else:
            tiles.append(to_uint8(load_portrait(portrait, size=resolution).permute(1, 2, 0).numpy()))
        tiles.extend(render_planes(avatar.planes, pipe.decoder, pipe.render, azimuths=list(SHEET_AZIMUTHS),
                                   resolution=resolution))
    return grid(np.stack(tiles), 1 + len(SHEET_AZIMUTHS))
