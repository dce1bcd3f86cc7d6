"""A fixed linear portrait encoder: z = whitened PCA of the portrait's pixels.

Stage 2 is conditioned on a latent z of the subject's portrait. The paper takes z from a frozen CLIP
image encoder; until our own image-text encoder exists, this encoder gives every portrait a
deterministic vector that already carries what matters most at low resolution (hair and clothing
colour, silhouette, hats, glasses), so the base model learns to follow z. It is a real component:
fitted on the training portraits, saved like every other (config.json + safetensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from rodin.errors import DataError

KIND = "pixel-pca-encoder"


@dataclass(frozen=True)
class PixelEncoderConfig:
    image_size: int = 16              # portraits are reduced to this side before projecting
    dim: int = 16                     # size of z


def square_on_white(image: Image.Image, *, size: int) -> Tensor:
    """Centre square of an image, resized to (3, size, size) floats in [0, 1], alpha composited on white."""
    rgba = image.convert("RGBA")
    side = min(rgba.size)
    left, top = (rgba.width - side) // 2, (rgba.height - side) // 2
    rgba = rgba.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BOX)
    pixels = np.asarray(rgba, dtype=np.float32) / 255.0
    rgb = pixels[..., :3] * pixels[..., 3:] + (1.0 - pixels[..., 3:])
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def load_portrait(path: Path | str, *, size: int) -> Tensor:
    """A portrait file as (3, size, size) floats on white (see `square_on_white`)."""
    from rodin.data.nerf import MAX_SIDE

    path = Path(path)
    try:
        with Image.open(path) as image:
            if max(image.size) > MAX_SIDE:   # refused before decoding: a small file can claim a huge image
                raise DataError(f"{path}: image is {image.size[0]}x{image.size[1]}, larger than "
                                f"{MAX_SIDE}x{MAX_SIDE}; give a smaller portrait")
            image.load()
            return square_on_white(image, size=size)
    except FileNotFoundError:
        raise DataError(f"{path}: portrait not found") from None
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image too large to decode safely (at most {MAX_SIDE} px per side)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def portrait_from_array(image: np.ndarray | Tensor, *, size: int) -> Tensor:
    """An in-memory portrait, (H, W, 3|4) or (3|4, H, W), uint8 or floats in [0, 1]."""
    array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4) or min(array.shape[:2]) < 1:
        raise DataError(f"a portrait array must be (H, W, 3 or 4), got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.isfinite(array).all():
            raise DataError("the portrait array holds NaN or infinity")
        array = np.clip(np.floor(array.astype(np.float64) * 255 + 0.5), 0, 255).astype(np.uint8)
    return square_on_white(Image.fromarray(np.ascontiguousarray(array)), size=size)


class PixelEncoder(nn.Module):
    """encode(images (B, 3, S, S) in [0, 1]) -> z (B, dim), each component with unit variance on the data."""

    def __init__(self, config: PixelEncoderConfig) -> None:
        super().__init__()
        self.config = config
        features = 3 * config.image_size ** 2
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("components", torch.zeros(config.dim, features))
        self.register_buffer("scale", torch.ones(config.dim))

    @torch.no_grad()
    def fit(self, images: Tensor) -> PixelEncoder:
        flat = images.reshape(len(images), -1).double()
        if len(flat) < 2:
            raise DataError("fitting the portrait encoder needs at least 2 portraits")
        mean = flat.mean(dim=0)
        _, s, vh = torch.linalg.svd(flat - mean, full_matrices=False)
        dim = self.config.dim
        components = torch.zeros(dim, flat.shape[1], dtype=torch.float64)
        scale = torch.ones(dim, dtype=torch.float64)
        kept = min(dim, len(s))
        components[:kept] = vh[:kept]
        # std of each projection over the data; tiny ones (fewer portraits than dim) stay at 1
        std = s[:kept] / max(len(flat) - 1, 1) ** 0.5
        scale[:kept] = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.mean.copy_(mean.float())
        self.components.copy_(components.float())
        self.scale.copy_(scale.float())
        return self

    def forward(self, images: Tensor) -> Tensor:
        flat = images.reshape(len(images), -1).to(self.mean.dtype)
        return ((flat - self.mean) @ self.components.T) / self.scale

    def encode_files(self, paths: list[Path]) -> Tensor:
        images = torch.stack([load_portrait(p, size=self.config.image_size) for p in paths])
        with torch.no_grad():
            return self(images)
