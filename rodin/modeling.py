"""Components on disk: a folder with config.json and model.safetensors (never pickle).

Loading checks the config strictly (unknown keys fail by name) and the weights against the
module built from it (missing, unexpected, mis-shaped or wrong-dtype tensors fail clearly).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from rodin.config import from_dict
from rodin.errors import ConfigError, DataError
from rodin.io import write_atomic, write_json

M = TypeVar("M", bound=torch.nn.Module)
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# Half precision is stored where harmless; loading casts to the module's own dtype.
LOADABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def save_component(module: torch.nn.Module, folder: Path | str, *, kind: str, dtype: torch.dtype | None = None) -> Path:
    """Write `module.config` and its weights into `folder` (each file atomically).

    `dtype` stores floating-point tensors in that precision (float16 halves a shipped model);
    loading casts them back to the module's own dtype.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    write_atomic(folder / WEIGHTS, save(tensors, metadata={"kind": kind}))
    write_json(folder / CONFIG, {"kind": kind, "config": asdict(module.config)})
    return folder


PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def load_component(cls: type[M], config_cls: type, folder: Path | str, *, kind: str, allow_pickle: bool = False) -> M:
    """Build a component from its folder, checking the config and every tensor against it.

    Pickled weights (.pt/.pth/.bin/.ckpt) can run code when read, so they are refused unless the
    caller passes `allow_pickle=True`; even then only tensors are unpickled (`weights_only`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: model folder not found")
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise DataError(f"{config_path}: missing (a component folder holds config.json and {WEIGHTS})")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{config_path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (UnicodeDecodeError, RecursionError):
        raise ConfigError(f"{config_path}: not a JSON config (not UTF-8, or nested too deeply)") from None
    if not isinstance(raw, dict) or raw.get("kind") != kind or "config" not in raw:
        raise ConfigError(f"{config_path}: not a {kind} config "
                          f"(expected {{'kind': '{kind}', 'config': {{...}}}})")
    try:
        config = from_dict(config_cls, raw["config"])
    except ConfigError as err:
        raise ConfigError(f"{config_path}: {err}") from None
    module = cls(config)
    weights_path = folder / WEIGHTS
    pickles = sorted(p for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
    if not weights_path.is_file() and pickles and allow_pickle:
        weights_path = pickles[0]
        tensors = _load_pickled(weights_path)
    elif not weights_path.is_file():
        hint = (f" (found {pickles[0].name}: pickled weights can run code when loaded, so they are read only "
                "with allow_pickle=True; better, convert them to safetensors)") if pickles else ""
        raise DataError(f"{weights_path}: missing{hint}")
    else:
        try:
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as err:
            raise DataError(f"{weights_path}: unreadable safetensors file ({err})") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise DataError(f"{weights_path}: missing tensor {missing[0]!r} for this config")
    if unexpected:
        raise DataError(f"{weights_path}: unexpected tensor {unexpected[0]!r} for this config")
    for name, tensor in tensors.items():
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise DataError(f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                            f"config expects {tuple(want.shape)}")
        if want.is_floating_point() and tensor.dtype not in LOADABLE_DTYPES:
            raise DataError(f"{weights_path}: tensor {name!r} has dtype {tensor.dtype}; "
                            "expected float32, float16 or bfloat16")
        if not want.is_floating_point() and tensor.dtype != want.dtype:   # indices, codes: exactly as saved
            raise DataError(f"{weights_path}: tensor {name!r} has dtype {tensor.dtype}; expected {want.dtype}")
        if not torch.isfinite(tensor).all():
            raise DataError(f"{weights_path}: tensor {name!r} holds NaN or infinity")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return module


def _load_pickled(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, unpickled with torch's tensors-only loader (no arbitrary objects)."""
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports refused or broken pickles with many exception types
        raise DataError(f"{path}: unreadable or unsafe pickled weights ({type(err).__name__})") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise DataError(f"{path}: not a state dict of tensors")
    return tensors
