"""Turn a user's LPIPS checkpoints into a folder we load: config.json and one model.safetensors.

Two files go in, both as their projects save them: torchvision's AlexNet or VGG16 state dict (the trunk;
only `features.*` is kept, `classifier.*` is dropped) and the LPIPS repository's v0.1 linear layers
(`lin0.model.1.weight` ... `lin4.model.1.weight`, each (1, C, 1, 1)). Pickles are read once, here, with
torch's tensors-only unpickler; every name and shape is checked before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rodin.errors import DataError
from rodin.eval.lpips import KIND, Lpips, LpipsConfig, tap_channels, trunk_spec

# The same layer saved with or without LPIPS's dropout in front of it.
LINEAR_NAMES = ("lin{k}.model.1.weight", "lin{k}.model.0.weight")


def read_state_dict(path: Path, *, what: str) -> dict[str, Tensor]:
    """A state dict from a .pth/.pt pickle (tensors only) or a .safetensors file."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise DataError(f"{path}: unreadable safetensors {what} ({err})") from None
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports refused or broken pickles with many exception types
        raise DataError(f"{path}: unreadable {what}, or it holds more than tensors "
                        f"({type(err).__name__}); only plain state dicts are read") from None
    if isinstance(value, dict) and isinstance(value.get("state_dict"), dict):
        value = value["state_dict"]
    if not isinstance(value, dict) or not all(isinstance(v, Tensor) for v in value.values()):
        raise DataError(f"{path}: {what} is not a state dict of tensors")
    return value


def _checked(path: Path, name: str, tensor: Tensor, shape: tuple[int, ...], *, what: str) -> Tensor:
    if tuple(tensor.shape) != shape:
        raise DataError(f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, {what} expects {shape}")
    if not tensor.is_floating_point():
        raise DataError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, expected floating point")
    if not torch.isfinite(tensor).all():
        raise DataError(f"{path}: tensor {name!r} holds NaN or infinity")
    return tensor.float()


def trunk_tensors(tensors: dict[str, Tensor], *, net: str, path: Path) -> dict[str, Tensor]:
    """The `features.*` weights of a torchvision state dict, checked against the `net` layout."""
    spec = trunk_spec(net)
    what = f"torchvision {net}"
    out: dict[str, Tensor] = {}
    for index, (cin, cout, kernel, _, _) in spec.convs.items():
        for name, shape in ((f"features.{index}.weight", (cout, cin, kernel, kernel)),
                            (f"features.{index}.bias", (cout,))):
            if name not in tensors:
                raise DataError(f"{path}: missing tensor {name!r} (expected a {what} state dict)")
            out[name] = _checked(path, name, tensors[name], shape, what=what)
    unexpected = sorted(k for k in tensors if k not in out and not k.startswith("classifier."))
    if unexpected:
        raise DataError(f"{path}: unexpected tensor {unexpected[0]!r} for a {what} state dict")
    return out


def linear_tensors(tensors: dict[str, Tensor], *, net: str, path: Path) -> dict[str, Tensor]:
    """The five v0.1 linear layers of the LPIPS repository's checkpoint, renamed `lin.K.weight`."""
    what = f"LPIPS v0.1 {net}"
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for k, channels in enumerate(tap_channels(trunk_spec(net))):
        name = next((n.format(k=k) for n in LINEAR_NAMES if n.format(k=k) in tensors), None)
        if name is None:
            raise DataError(f"{path}: missing tensor {LINEAR_NAMES[0].format(k=k)!r} "
                            f"(expected the LPIPS repository's {net}.pth linear layers)")
        out[f"lin.{k}.weight"] = _checked(path, name, tensors[name], (1, channels, 1, 1), what=what)
        used.add(name)
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise DataError(f"{path}: unexpected tensor {unexpected[0]!r} for {what} linear layers")
    return out


def convert_lpips(*, backbone: Path, linear: Path, out: Path, net: str = "alex") -> Path:
    """Check both checkpoints and write OUT/config.json and OUT/model.safetensors (each whole)."""
    from rodin.modeling import save_component

    network = Lpips(LpipsConfig(net=net))            # refuses an unknown trunk first
    weights = trunk_tensors(read_state_dict(backbone, what="backbone checkpoint"), net=net, path=backbone)
    weights.update(linear_tensors(read_state_dict(linear, what="linear-layer checkpoint"), net=net, path=linear))
    network.load_state_dict(weights)
    return save_component(network, out, kind=KIND)
