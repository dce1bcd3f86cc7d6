"""Choosing the torch device a command runs on, from a name the user typed."""

from __future__ import annotations

import os

import torch

from rodin.errors import ConfigError


def parse_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N` (`mps` where torch has it), refused in one line when this machine lacks it.

    Plain `cuda` in a process launched by `accelerate launch` or torchrun means that process's own GPU
    (LOCAL_RANK), so that N processes of one command spread over N GPUs.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {name!r} is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: this machine has no CUDA GPU that torch {torch.__version__} "
                              "can use; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is None:
            local = os.environ.get("LOCAL_RANK")
            return torch.device("cuda", int(local) % count if local and local.isdigit() else 0)
        if device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return device
    if device.type == "mps" and torch.backends.mps.is_available():
        return device
    raise ConfigError(f"--device {name}: not available here; use cpu or cuda")
