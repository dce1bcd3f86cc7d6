"""`rodin train STAGE`: one verb per training stage, each resumable."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

app = typer.Typer(help="Train the diffusion stages (each resumes where it stopped).", no_args_is_help=True)


@app.command("base")
def base(
    triplanes: Path = typer.Option(..., "--triplanes", help="A fit run folder (rodin fit output)."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (resumes if it holds a checkpoint)."),
    preset: str = typer.Option("small", "--preset", help="Scale preset: tiny, small or paper."),
    data: Path | None = typer.Option(None, "--data", help="The run's dataset, if not where the run recorded it."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's)."),
    batch: int | None = typer.Option(None, "--batch", min=1, help="Batch size (default: the preset's)."),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Peak learning rate."),
    conv: str | None = typer.Option(None, "--conv", help="aware (3D-aware, default) or plain, for the ablation."),
    prediction: str | None = typer.Option(None, "--prediction", help="epsilon (default) or v_prediction."),
    sample_every: int | None = typer.Option(None, "--sample-every", min=0, help="Steps between sample renders."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
) -> None:
    """Train the base diffusion model on fitted tri-planes (stage 2)."""
    from rodin.config import get_preset
    from rodin.train.base import train_base

    chosen = get_preset(preset)
    tcfg = chosen.train_base
    overrides = {k: v for k, v in dict(steps=steps, batch=batch, lr=lr, sample_every=sample_every, seed=seed).items()
                 if v is not None}
    tcfg = replace(tcfg, **overrides)
    mcfg = chosen.base
    if conv is not None:
        mcfg = replace(mcfg, unet=replace(mcfg.unet, conv=conv))
    if prediction is not None:
        mcfg = replace(mcfg, diffusion=replace(mcfg.diffusion, prediction=prediction))
    from rodin.diffusion.unet import check_unet_config

    check_unet_config(mcfg.unet)
    figures = train_base(triplanes, out, preset=chosen, data=data, model_config=mcfg, train_config=tcfg, cpu=cpu,
                         log=lambda m: typer.echo(m, err=True))
    typer.echo(f"wrote {out / 'base'}")
    print(json.dumps(figures), flush=True)
