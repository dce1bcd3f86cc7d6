"""What every diffusion training stage shares: accelerate setup, deterministic batches, EMA,
resumable checkpoints and a CSV log.

Determinism and exact resume come from drawing each step's randomness (batch rows, noise, noise
levels, z dropout) from a generator seeded by (seed, step, process), so a resumed run needs only
the weights, the EMA, the optimiser and the step count to continue as if never stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save
from torch import nn

from rodin.config import TrainConfig
from rodin.errors import ConfigError, DataError, TrainError
from rodin.io import remove_tree, write_atomic, write_json

CHECKPOINT = "checkpoint"


MIXED_PRECISION = ("no", "bf16", "fp16")


def make_accelerator(*, cpu: bool = False, mixed_precision: str | None = None,
                     gradient_accumulation_steps: int = 1) -> Accelerator:
    """One code path for a CPU, one GPU or many (launch with `accelerate launch`).

    `mixed_precision` None leaves the choice to `accelerate config` / `accelerate launch` flags;
    accumulation goes through accelerate's `accumulate`, so DDP skips the all-reduce on micro-steps.
    """
    if mixed_precision is not None and mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"mixed precision must be one of {', '.join(MIXED_PRECISION)}, got {mixed_precision!r}")
    if gradient_accumulation_steps < 1:
        raise ConfigError(f"gradient accumulation steps must be at least 1, got {gradient_accumulation_steps}")
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision,
                              gradient_accumulation_steps=gradient_accumulation_steps)
    if accelerator.distributed_type == DistributedType.FSDP:
        raise ConfigError("accelerate's own FSDP (--use_fsdp, or fsdp in the accelerate config) is not used here: "
                          "launch without it and pass --fsdp to `rodin train base|upsampler|refiner`")
    return accelerator


def micro_batches(batch: int, accelerator: Accelerator) -> list[slice]:
    """This process's share of a global batch of `batch` examples, cut into accumulation micro-batches.

    Every process draws the same global batch from the same generator and keeps its own contiguous
    rows, so the mean of the per-process, per-micro-batch losses (what DDP averaging and accelerate's
    loss scaling compute) equals the single-process loss over the whole batch: same examples, same
    noise, same result, whatever the number of processes.
    """
    procs, steps = accelerator.num_processes, accelerator.gradient_accumulation_steps
    if batch % (procs * steps):
        raise ConfigError(f"batch {batch} does not split into {procs} processes x {steps} accumulation steps; "
                          f"use a multiple of {procs * steps}")
    size = batch // (procs * steps)
    first = accelerator.process_index * size * steps
    return [slice(first + k * size, first + (k + 1) * size) for k in range(steps)]


def step_generator(seed: int, step: int, process: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + process)


def warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to 10% at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class TrainLog:
    """Appends one CSV line per logged step (a crash loses at most the line being written)."""

    def __init__(self, path: Path, fields: tuple[str, ...]) -> None:
        self.path = path
        self.fields = fields

    def append(self, **values) -> None:
        new = not self.path.exists()
        with open(self.path, "a") as handle:
            if new:
                handle.write(",".join(self.fields) + "\n")
            row = []
            for f in self.fields:
                v = values.get(f, "")
                row.append(f"{v:.6g}" if isinstance(v, float) else str(v))
            handle.write(",".join(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after the checkpoint a run resumes from, so the log has no repeats."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        kept = lines[:1] + [line for line in lines[1:] if _whole_line_up_to(line, step, len(self.fields))]
        write_atomic(self.path, ("\n".join(kept) + "\n").encode())


def _whole_line_up_to(line: str, step: int, width: int) -> bool:
    """A line with every field and a step no later than `step` (a kill can leave a line cut short)."""
    cells = line.split(",")
    return len(cells) == width and cells[0].isdigit() and int(cells[0]) <= step


def rng_state() -> dict[str, torch.Tensor]:
    """The global torch generators (CPU and each GPU): what dropout and any unseeded draw use."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            torch.cuda.set_rng_state(state.get(f"cuda.{i}", s), i)


def remove_checkpoint(out: Path) -> None:
    """Drop OUT/checkpoint once the model is saved: renamed aside first, so that a kill halfway through
    the removal cannot leave a half-deleted checkpoint that a rerun would try to resume from."""
    remove_tree(out / CHECKPOINT)


def named_ema(model: nn.Module, ema: EMAModel) -> dict[str, torch.Tensor]:
    names = [n for n, _ in model.named_parameters()]
    return {n: p.detach().clone().contiguous() for n, p in zip(names, ema.shadow_params)}


def save_checkpoint(out: Path, *, model: nn.Module, ema: EMAModel, optimizer: torch.optim.Optimizer, step: int,
                    config: dict) -> None:
    """OUT/checkpoint/ replaced whole: written beside it, then swapped in by renames.

    It holds the weights, the EMA, the optimiser, the step (the learning-rate schedule is a function of
    the step, so the step is the scheduler's state) and the global RNG state (each step's own draws come
    from `step_generator`, which needs none).
    """
    tmp = out / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_atomic(tmp / "model.safetensors", save(state))
    write_atomic(tmp / "ema.safetensors", save({k: v.cpu() for k, v in named_ema(model, ema).items()}))
    opt = optimizer.state_dict()
    tensors, per_param = {}, {}
    for pid, entry in opt["state"].items():
        for key, value in entry.items():
            tensors[f"{pid}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
        per_param[str(pid)] = sorted(entry)
    write_atomic(tmp / "optimizer.safetensors", save(tensors))
    write_atomic(tmp / "rng.safetensors", save(rng_state()))
    write_json(tmp / "state.json", {"step": step, "ema_step": ema.optimization_step, "config": config,
                                    "param_groups": opt["param_groups"], "saved": time.time()})
    final, old = out / CHECKPOINT, out / f".{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(out: Path, *, model: nn.Module, ema: EMAModel, optimizer: torch.optim.Optimizer,
                    config: dict) -> int:
    """Restore a checkpoint written by `save_checkpoint`; returns the step to continue from (0 if none)."""
    root = out / CHECKPOINT
    if not (root / "state.json").is_file():
        old = out / f".{CHECKPOINT}.old"  # killed between the two renames: the old one is whole
        if (old / "state.json").is_file():
            old.rename(root)
        else:
            return 0
    try:
        state = json.loads((root / "state.json").read_text())
        weights = load_file(str(root / "model.safetensors"))
        shadow = load_file(str(root / "ema.safetensors"))
        opt_tensors = load_file(str(root / "optimizer.safetensors"))
    except (OSError, ValueError) as err:
        raise DataError(f"{root}: unreadable checkpoint ({err}); delete it to start over") from None
    if state.get("config") != config:
        raise ConfigError(f"{out}: holds a run with other settings; use another --out or delete {root}")
    model.load_state_dict(weights)
    with torch.no_grad():
        names = [n for n, _ in model.named_parameters()]
        for name, target in zip(names, ema.shadow_params):
            target.copy_(shadow[name])
    ema.optimization_step = state["ema_step"]
    opt_state: dict = {}
    for key, value in opt_tensors.items():
        pid, field = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[field] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    if (root / "rng.safetensors").is_file():
        set_rng_state(load_file(str(root / "rng.safetensors")))
    return int(state["step"])


def train_config_dict(config: TrainConfig, **extra) -> dict:
    return {"train": asdict(config), **extra}


def check_finite(loss: torch.Tensor, step: int, out: Path) -> None:
    if not torch.isfinite(loss):
        raise TrainError(f"loss became {loss.item()} at step {step}; the last good checkpoint in "
                        f"{out / CHECKPOINT} is kept (lower the learning rate and resume)")
