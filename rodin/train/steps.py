"""The optimisation loop of every diffusion stage (base, prior, upsampler, refiner), their losses plugged in.

A stage gives a `draw(step, share)` that makes step `step`'s batch (a pure function of the step, drawn
from `step_generator`, holding this process's rows `share` of the global batch) and a
`loss(model, batch, rows)` of the global-batch rows `rows` (a micro-batch inside `share`); optionally an
`after(done, model, ema)` run on the main process after each step, whose fields join that step's log row
(the base stage's held-out loss and sample renders). Everything else is shared (rodin.train.loop):
accelerate, micro-batches per process, warm-up + cosine learning rate, gradient clipping, EMA, resumable
checkpoints that the run's identity must match, and a CSV log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torch import nn

from rodin.config import RefinerTrainConfig, TrainConfig
from rodin.errors import ConfigError
from rodin.train.loop import (
    CHECKPOINT,
    TrainLog,
    check_finite,
    load_checkpoint,
    micro_batches,
    save_checkpoint,
    warmup_cosine,
)
from rodin.train.sharding import WholeCopy, shard_training_state

LOG_FIELDS = ("step", "time", "loss", "lr", "step_s")


def state_folder(out: Path, stage: str) -> Path:
    """OUT/.STAGE_state: where a stage keeps its checkpoint, apart from the other stages in the same folder."""
    return out / f".{stage}_state"


def finished_figures(out: Path, record: str, identity: dict, *, stage: str,
                     state: Path | None = None) -> dict | None:
    """The figures of a run already finished in OUT with this identity; an error if OUT holds another.

    `state` is where the stage keeps its checkpoint when not in `state_folder` (the base stage: OUT)."""
    path = out / record
    if not path.is_file() or ((state or state_folder(out, stage)) / CHECKPOINT).exists():
        return None
    done = json.loads(path.read_text())
    if {k: done.get(k) for k in identity} == json.loads(json.dumps(identity)):
        return done["figures"]
    raise ConfigError(f"{out}: holds a model trained with other settings; use another --out")


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    train: TrainConfig | RefinerTrainConfig,
    out: Path,
    identity: dict,
    accelerator: Accelerator,
    draw: Callable[[int, slice], Any],
    loss: Callable[[nn.Module, Any, slice], torch.Tensor],
    stage: str,
    desc: str,
    log: Callable[[str], None],
    show_progress: bool,
    state: Path | None = None,
    log_file: str | None = None,
    fields: tuple[str, ...] = LOG_FIELDS,
    after: Callable[[int, nn.Module, EMAModel], dict] | None = None,
    fsdp: bool = False,
) -> tuple[nn.Module, EMAModel, list[float]]:
    """Train (or resume) to `train.steps`; returns the unwrapped model, its EMA and the logged losses.

    `identity` (JSON-able) is what a checkpoint must match to be resumed. The checkpoint (`state`/checkpoint,
    `state` by default OUT/.STAGE_state) and the log (OUT/`log_file`, by default STAGE_log.csv, columns
    `fields`) are the stage's own: every stage trains into the same model folder. The base stage, the first,
    keeps its older layout: OUT/checkpoint and OUT/train_log.csv.

    `after` runs at the sample steps (every `train.sample_every`, and the last). With `fsdp` the model is
    sharded across the processes (rodin.train.sharding); checkpoints, `after` and the returned model are
    whole, as an unsharded run's, on the main process.
    """
    from tqdm import tqdm

    config = json.loads(json.dumps(identity))
    ema = EMAModel(model.parameters(), decay=train.ema_decay)
    state = state or state_folder(out, stage)
    start = load_checkpoint(state, model=model, ema=ema, optimizer=optimizer, config=config)
    if start:
        log(f"resuming from step {start}")
    whole_copy = None
    if fsdp:
        whole_copy = WholeCopy(model, optimizer, decay=train.ema_decay, main=accelerator.is_main_process)
        shard_training_state(model, ema, optimizer, device=accelerator.device)
        optimizer = accelerator.prepare(optimizer)     # the model stays out of accelerate's DDP wrapper
        unwrapped = model
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
        unwrapped = accelerator.unwrap_model(model)
    ema.to(accelerator.device)

    def held(*, moments: bool) -> tuple[nn.Module, EMAModel, torch.optim.Optimizer] | None:
        """The whole model, EMA and optimiser (on the main process; a collective under FSDP, which gathers
        the optimiser's moments only with `moments`)."""
        if whole_copy is None:
            return unwrapped, ema, optimizer
        return whole_copy.refresh(unwrapped, ema, optimizer if moments else None)

    sample_every = getattr(train, "sample_every", 0)
    parts = micro_batches(train.batch, accelerator)
    share = slice(parts[0].start, parts[-1].stop)
    train_log = TrainLog(out / (log_file or f"{stage}_log.csv"), fields)
    if accelerator.is_main_process:
        train_log.truncate_after(start)
    t0, last, running, logged = time.time(), time.time(), [], []
    bar = tqdm(range(start, train.steps), initial=start, total=train.steps, desc=desc, unit="step",
               disable=not (show_progress and accelerator.is_main_process))
    model.train()
    for step in bar:
        batch = draw(step, share)
        lr = train.lr * warmup_cosine(step, warmup=train.warmup, total=train.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = []
        for rows in parts:
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    value = loss(model, batch, rows)
                check_finite(value, step, state)
                accelerator.backward(value)
                if train.grad_clip > 0 and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), train.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(value.detach().float())
        ema.step(unwrapped.parameters())
        running.append(accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item())
        done = step + 1
        sampling = after is not None and (done == train.steps or (sample_every and done % sample_every == 0))
        saving = done % train.checkpoint_every == 0 and done < train.steps
        whole = held(moments=saving) if sampling or saving else None
        if accelerator.is_main_process:
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
            row = {}
            if done % train.log_every == 0 or done == train.steps:
                now = time.time()
                logged.append(float(np.mean(running)))
                row = {"loss": logged[-1], "lr": lr, "step_s": (now - last) / max(1, len(running))}
                running, last = [], now
            if sampling:
                row.update(after(done, whole[0], whole[1]))
            if row:
                train_log.append(step=done, time=round(time.time() - t0, 1), **row)
            if saving:
                save_checkpoint(state, model=whole[0], ema=whole[1], optimizer=whole[2], step=done, config=config)
    bar.close()
    accelerator.wait_for_everyone()
    whole = held(moments=False)
    if whole is None:       # a process other than the main one under FSDP: it holds only slices
        return unwrapped, ema, logged
    return whole[0], whole[1], logged
