"""`rodin fit`: stage 1, tri-planes and the shared decoder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rodin.config import FitConfig, from_dict, get_preset, parse_settings


def fit(
    data: Path = typer.Argument(..., help="Dataset folder (rodin data synth output), folder of subject "
                                "folders, or one NeRF-synthetic subject folder."),
    out: Path = typer.Option(..., "--out", help="Run folder: decoder, tri-plane store, metrics."),
    preset: str = typer.Option("small", "--preset", help="Scale preset: tiny, small or paper."),
    decoder: Path | None = typer.Option(None, "--decoder", help="A fitted decoder folder to reuse "
                                        "(frozen); skips the joint stage."),
    subjects: int | None = typer.Option(None, "--subjects", help="Fit only the first N subjects."),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps per subject (frozen stage)."),
    joint_rounds: int | None = typer.Option(None, "--joint-rounds", help="Turns over the joint group "
                                            "(joint decoder stage; default: the preset's)."),
    joint_steps: int | None = typer.Option(None, "--joint-steps", help="Optimiser steps per turn of the "
                                           "joint decoder stage (default: the preset's)."),
    up: str = typer.Option("auto", "--up", help="World up axis of the files: auto, y or z (Blender)."),
    bound: float | None = typer.Option(None, "--bound", help="Scene half-size in file units "
                                       "(default: from the files or the cameras)."),
    resolution: int | None = typer.Option(None, "--resolution", help="Downscale views to this size."),
    joint_only: bool = typer.Option(False, "--joint-only", help="Stop after the decoder stage: the step before "
                                    "sharded fitting."),
    shard: str | None = typer.Option(None, "--shard", help="I/N: fit only shard I (from 0) of N of the "
                                     "frozen-decoder stage, into OUT/shards/I-of-N (default under "
                                     "accelerate launch / torchrun: this process's rank of the world)."),
    device: str = typer.Option("cpu", "--device", help="Where to fit: cpu, cuda or cuda:N (plain cuda under "
                               "accelerate launch: each process's own GPU; the processes then need the nccl "
                               "backend)."),
    settings: list[str] = typer.Option([], "--set", help="A FitConfig field, KEY=VALUE (repeatable), e.g. "
                                       "--set samples=12; a resumed run records earlier settings in "
                                       "OUT/fit_config.json."),
) -> None:
    """Fit a tri-plane per subject with one shared MLP decoder; resumes an interrupted run.

    Writes OUT/metrics.json with held-out PSNR/SSIM (views never used in fitting). Under `accelerate
    launch`, --joint-only fits the decoder stage data-parallel; without it each process fits a shard.
    """
    import dataclasses

    from rodin.cli.outputs import discard_on_failure, refuse_overlap
    from rodin.errors import ConfigError
    from rodin.fit.run import LoadOptions, fit_dataset
    from rodin.fit.shards import Shard

    if up not in ("auto", "y", "z"):
        raise ConfigError(f"--up must be auto, y or z, got {up!r}")
    chosen = get_preset(preset)
    changes = parse_settings(settings)
    if changes:
        chosen = dataclasses.replace(chosen, fit=from_dict(FitConfig, {**dataclasses.asdict(chosen.fit), **changes}))
    if steps is not None:
        if steps < 1:
            raise ConfigError("--steps must be at least 1")
        chosen = dataclasses.replace(chosen, fit=dataclasses.replace(chosen.fit, steps=steps))
    for flag, value, field in (("--joint-rounds", joint_rounds, "joint_rounds"),
                               ("--joint-steps", joint_steps, "joint_steps_per_turn")):
        if value is not None:
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1")
            chosen = dataclasses.replace(chosen, fit=dataclasses.replace(chosen.fit, **{field: value}))
    from rodin.devices import parse_device

    chosen_device = parse_device(device)
    chosen_shard = Shard.parse(shard) if shard is not None else (None if joint_only else Shard.from_environment())
    if joint_only and chosen_shard is not None:
        raise ConfigError("--joint-only and --shard are two steps: run the joint stage once, then the shards")
    refuse_overlap(out, data, what="dataset")
    with discard_on_failure(out, keep=_has_progress):
        metrics = fit_dataset(data, out, preset=chosen, decoder_path=decoder, max_subjects=subjects,
                              options=LoadOptions(up=up, bound=bound, resolution=resolution), shard=chosen_shard,
                              joint_only=joint_only, device=chosen_device, log=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps(metrics))


def _has_progress(out: Path) -> bool:
    """A run folder worth keeping after a failure: the joint stage checkpointed, a subject fitted, or
    shards (other processes may be writing into them)."""
    if (out / "checkpoint" / "joint.safetensors").is_file() or (out / "shards").exists():
        return True
    try:
        return any(json.loads((out / "triplanes" / "subjects.json").read_text())["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def fit_merge(
    run: Path = typer.Argument(..., help="A fit run folder whose shards (OUT/shards/I-of-N) are all finished."),
) -> None:
    """Merge the shards of a sharded `rodin fit` into the run's tri-plane store, with its statistics."""
    from rodin.fit.shards import merge_shards

    typer.echo(json.dumps(merge_shards(run, log=lambda m: typer.echo(m, err=True))))
