"""Per-component configs and the scale presets of DESIGN.md.

Every config is a frozen dataclass; building one from a dict rejects unknown keys by name, so a
typo in a config file fails loudly instead of silently keeping a default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rodin.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    """The procedural avatar dataset."""

    subjects: int = 8
    views: int = 32                   # RGBA views per subject, spread over the upper sphere
    resolution: int = 32              # pixels, square views
    portrait_resolution: int = 128    # pixels, the frontal portrait


@dataclass(frozen=True)
class TriplaneConfig:
    """Tri-plane sizes: fitted at `resolution`, read by the base model at `base_resolution`."""

    channels: int = 8
    resolution: int = 32              # fitted / upsampled plane side
    base_resolution: int = 16         # base diffusion plane side


@dataclass(frozen=True)
class DecoderConfig:
    """The MLP that turns summed tri-plane features into density and colour."""

    features: int = 8                 # channels per plane
    hidden: int = 64
    layers: int = 2                   # hidden layers
    fourier_octaves: int = 2          # sin/cos embedding of the sampled features, as in the paper
    view_dependent: bool = True       # colour depends on the viewing direction
    extra_features: int = 0           # rendered feature channels for the refiner
    density_bias: float = 0.0         # initial log-density: a light fog that gradients can shape


@dataclass(frozen=True)
class RenderConfig:
    """Volume rendering settings."""

    resolution: int = 32              # rendered image side, pixels
    samples: int = 48                 # stratified samples per ray
    importance: int = 16              # extra samples drawn from the coarse weights
    background: float = 1.0           # white
    occupancy_resolution: int = 32    # grid used to skip empty space
    occupancy_threshold: float = 0.5  # density below which a cell counts as empty


@dataclass(frozen=True)
class FitConfig:
    """Stage 1: shared-decoder fitting."""

    joint_subjects: int = 8           # subjects fitted jointly with the decoder
    joint_rounds: int = 6             # turns over the joint group
    joint_steps_per_turn: int = 40    # optimiser steps per subject per turn
    steps: int = 150                  # optimiser steps per subject with the decoder frozen
    rays_per_step: int = 2048         # across the subjects of a step, drawn as square patches
    patch: int = 8                    # patch side, pixels (the SSIM term needs neighbourhoods)
    samples: int = 32                 # stratified samples per ray inside the visual hull
    plane_lr: float = 0.02
    plane_levels: int = 1             # planes optimised as a sum of this many resolutions (1 = plain)
    init_noise: float = 0.1           # std of the random planes a subject starts from
    template_noise: float = 0.01      # std added to the decoder's template tri-plane when it has one
    decoder_lr: float = 5e-3
    heldout_views: int = 4            # views kept out of fitting, for the metrics
    ssim_weight: float = 0.0          # SSIM on patches: measured to slow fitting at our budgets (BENCHMARKS.md)
    mask_weight: float = 0.1          # opacity against the images' alpha
    sparse_weight: float = 1e-2       # L1 on density at random points of the box
    tv_weight: float = 1e-3           # total variation of the planes
    compact_weight: float = 1e-4      # L2 on plane features
    rescale_prob: float = 0.25        # chance a step reads the planes at the base resolution
    hull_resolution: int = 48         # visual-hull grid used to skip empty space while fitting
    batch_subjects: int = 8           # subjects fitted together with a frozen decoder
    seed: int = 0


@dataclass(frozen=True)
class Preset:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    fit: FitConfig = field(default_factory=FitConfig)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        data=DataConfig(subjects=8, views=16, resolution=32, portrait_resolution=64),
        triplane=TriplaneConfig(channels=8, resolution=32, base_resolution=16),
        decoder=DecoderConfig(features=8, hidden=32, layers=2),
        render=RenderConfig(resolution=32, samples=32, importance=0, occupancy_resolution=32),
        fit=FitConfig(joint_subjects=4, joint_rounds=4, joint_steps_per_turn=75, steps=150,
                      rays_per_step=2048, heldout_views=2, batch_subjects=4),
    ),
    "small": Preset(
        name="small",
        data=DataConfig(subjects=1000, views=32, resolution=64, portrait_resolution=128),
        triplane=TriplaneConfig(channels=16, resolution=64, base_resolution=32),
        decoder=DecoderConfig(features=16, hidden=64, layers=2),
        render=RenderConfig(resolution=64, samples=64, importance=16, occupancy_resolution=48),
        fit=FitConfig(joint_subjects=48, joint_rounds=12, joint_steps_per_turn=40, steps=200,
                      rays_per_step=4096, heldout_views=4, batch_subjects=8),
    ),
    "paper": Preset(
        name="paper",
        data=DataConfig(subjects=100_000, views=64, resolution=256, portrait_resolution=512),
        triplane=TriplaneConfig(channels=32, resolution=256, base_resolution=64),
        decoder=DecoderConfig(features=32, hidden=128, layers=3),
        render=RenderConfig(resolution=256, samples=96, importance=48, occupancy_resolution=128),
        fit=FitConfig(joint_subjects=300, joint_rounds=10, joint_steps_per_turn=100, steps=1000,
                      rays_per_step=16384, heldout_views=8, batch_subjects=32),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build a (nested) config dataclass from a dict; unknown keys and wrong types are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__} expects a JSON object, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {cls.__name__}; known keys: {', '.join(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name) if _has_defaults(cls) else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value)
        else:
            kwargs[name] = _check_type(cls.__name__, name, default, value)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_config(cls: type[T], path: Path) -> T:
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    try:
        return from_dict(cls, values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _has_defaults(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def _check_type(owner: str, name: str, default: Any, value: Any) -> Any:
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}.{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{owner}.{name} must be a string, got {value!r}")
    return value
