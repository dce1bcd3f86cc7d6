"""`rodin fit`: stage 1, tri-planes and the shared decoder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rodin.config import get_preset


def fit(
    data: Path = typer.Argument(..., help="Dataset folder (rodin data synth output), folder of subject "
                                "folders, or one NeRF-synthetic subject folder."),
    out: Path = typer.Option(..., "--out", help="Run folder: decoder, tri-plane store, metrics."),
    preset: str = typer.Option("small", "--preset", help="Scale preset: tiny, small or paper."),
    decoder: Path | None = typer.Option(None, "--decoder", help="A fitted decoder folder to reuse "
                                        "(frozen); skips the joint stage."),
    subjects: int | None = typer.Option(None, "--subjects", help="Fit only the first N subjects."),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps per subject (frozen stage)."),
    up: str = typer.Option("auto", "--up", help="World up axis of the files: auto, y or z (Blender)."),
    bound: float | None = typer.Option(None, "--bound", help="Scene half-size in file units "
                                       "(default: from the files or the cameras)."),
    resolution: int | None = typer.Option(None, "--resolution", help="Downscale views to this size."),
) -> None:
    """Fit a tri-plane per subject with one shared MLP decoder; resumes an interrupted run.

    Writes OUT/metrics.json with held-out PSNR/SSIM (views never used in fitting).
    """
    import dataclasses

    from rodin.errors import ConfigError
    from rodin.fit.run import LoadOptions, fit_dataset

    if up not in ("auto", "y", "z"):
        raise ConfigError(f"--up must be auto, y or z, got {up!r}")
    chosen = get_preset(preset)
    if steps is not None:
        if steps < 1:
            raise ConfigError("--steps must be at least 1")
        chosen = dataclasses.replace(chosen, fit=dataclasses.replace(chosen.fit, steps=steps))
    metrics = fit_dataset(data, out, preset=chosen, decoder_path=decoder, max_subjects=subjects,
                          options=LoadOptions(up=up, bound=bound, resolution=resolution),
                          log=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps(metrics))
