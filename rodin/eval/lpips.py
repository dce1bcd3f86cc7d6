"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"),
v0.1, written here because neither torchvision nor the `lpips` package imports beside our torch.

The distance between two images: both pass through a frozen classification trunk (AlexNet or VGG16, the
`features` part of torchvision's models, same layer indices so that its weights load by name); at five
ReLU taps each feature vector is scaled to unit length over channels, the squared difference is weighted
per channel by a learned 1×1 layer (one output), averaged over space, and the five layers are summed.
Inputs are first mapped to [-1, 1] and shifted/scaled as the LPIPS trunks expect.

No weights ship and none can be downloaded here: a folder made by `rodin convert lpips`
(`rodin.eval.lpips_convert`) from the user's own checkpoints holds config.json and model.safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rodin.errors import ConfigError, DataError

KIND = "lpips"


@dataclass(frozen=True)
class TrunkSpec:
    """A torchvision `features` layout: convolutions (index -> in, out, kernel, stride, padding), max-pools
    (index -> kernel, stride), ReLU everywhere else; the five LPIPS taps are ReLU outputs."""

    convs: dict[int, tuple[int, int, int, int, int]]
    pools: dict[int, tuple[int, int]]
    taps: tuple[int, ...]
    min_size: int                      # smallest image side the trunk reaches its last tap with


def _vgg16() -> TrunkSpec:
    widths = [64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool", 512, 512, 512, "pool", 512, 512, 512]
    convs, pools, index, channels = {}, {}, 0, 3
    for width in widths:
        if width == "pool":
            pools[index] = (2, 2)
            index += 1
        else:
            convs[index] = (channels, width, 3, 1, 1)
            channels = width
            index += 2                  # the conv, then its ReLU
    return TrunkSpec(convs=convs, pools=pools, taps=(3, 8, 15, 22, 29), min_size=16)


TRUNKS: dict[str, TrunkSpec] = {
    "alex": TrunkSpec(
        convs={0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1),
               10: (256, 256, 3, 1, 1)},
        pools={2: (3, 2), 5: (3, 2)},
        taps=(1, 4, 7, 9, 11),
        min_size=31,
    ),
    "vgg16": _vgg16(),
}
# The input normalisation of the LPIPS trunks, for images in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


@dataclass(frozen=True)
class LpipsConfig:
    """Which trunk the perceptual distance reads features with (v0.1 linear layers on top)."""

    net: str = "alex"          # alex or vgg16


def trunk_spec(net: str) -> TrunkSpec:
    if net not in TRUNKS:
        raise ConfigError(f"unknown LPIPS trunk {net!r}; known: {', '.join(TRUNKS)}")
    return TRUNKS[net]


def tap_channels(spec: TrunkSpec) -> list[int]:
    """Channels at each tap: those of the last convolution before it."""
    return [spec.convs[max(i for i in spec.convs if i < tap)][1] for tap in spec.taps]


def _trunk(spec: TrunkSpec) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(spec.taps[-1] + 1):     # nothing after the last tap is used
        if index in spec.convs:
            cin, cout, kernel, stride, padding = spec.convs[index]
            layers.append(nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding))
        elif index in spec.pools:
            layers.append(nn.MaxPool2d(*spec.pools[index]))
        else:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def unit_normalise(features: Tensor) -> Tensor:
    """Each spatial feature vector scaled to unit length over channels (as LPIPS does, with its epsilon)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)


class Lpips(nn.Module):
    """Perceptual distance between image batches; its state dict is `features.*` (torchvision names) and
    `lin.K.weight` (1, C_K, 1, 1), the v0.1 linear layers."""

    def __init__(self, config: LpipsConfig) -> None:
        super().__init__()
        self.config = config
        self.spec = trunk_spec(config.net)
        self.features = _trunk(self.spec)
        self.lin = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in tap_channels(self.spec))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def taps(self, images: Tensor) -> list[Tensor]:
        """Unit-normalised features at the five taps of (N, 3, H, W) images in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"LPIPS reads (N, 3, H, W) images, got {tuple(images.shape)}")
        if min(images.shape[-2:]) < self.spec.min_size:
            raise DataError(f"LPIPS ({self.config.net}) needs images of at least {self.spec.min_size} px a side, "
                            f"got {images.shape[-2]}×{images.shape[-1]}")
        x = ((images * 2 - 1) - self.shift) / self.scale
        out, wanted = [], set(self.spec.taps)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                out.append(unit_normalise(x))
        return out

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        """Per image distance (N,) of two (N, 3, H, W) batches in [0, 1]; 0 for identical images."""
        if first.shape != second.shape:
            raise ValueError(f"LPIPS compares equal shapes, got {tuple(first.shape)} and {tuple(second.shape)}")
        both = self.taps(torch.cat([first, second]))
        n = first.shape[0]
        total = first.new_zeros(n)
        for lin, feats in zip(self.lin, both):
            total = total + lin((feats[:n] - feats[n:]) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips(folder: Path | str) -> Lpips:
    """The frozen network of a folder written by `rodin convert lpips` (safetensors only)."""
    from rodin.modeling import CONFIG, load_component

    folder = Path(folder)
    hint = "make one from your AlexNet/VGG16 and LPIPS checkpoints with `rodin convert lpips`"
    if not folder.is_dir():
        raise DataError(f"{folder}: no LPIPS folder ({hint})")
    if not (folder / CONFIG).is_file():
        raise DataError(f"{folder}: not an LPIPS folder, no {CONFIG} ({hint})")
    network = load_component(Lpips, LpipsConfig, folder, kind=KIND)
    return network.eval().requires_grad_(False)
