"""Entry point of the `rodin` command.

Expected failures (RodinError) become one line on stderr and exit code 2; `--debug` shows the
traceback instead. Verbs live in their own modules and are registered here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from rodin.errors import RodinError

# Compute-heavy verbs keep freed memory for reuse (see rodin.triplane.kernel.tune_allocator).
HEAVY_VERBS = {"fit", "fit-merge", "render", "bench", "demo", "export", "eval", "train", "generate", "edit"}

app = typer.Typer(
    name="rodin",
    help="Rodin: sculpt 3D avatars as tri-plane radiance fields with diffusion.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Rodin: sculpt 3D avatars as tri-plane radiance fields with diffusion."""


@app.command("bench")
def bench(
    name: str = typer.Argument(..., help="Benchmark to run: synth, decode, fit, unet, render-meshes, generate, "
                               "upsampler, refiner, paper; or report (rewrite BENCHMARKS.md)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster run (for smoke tests); records nothing."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="fit, upsampler, refiner: optimiser steps per "
                                     "subject of their fitting."),
    subjects: int | None = typer.Option(None, "--subjects", min=1, help="fit, upsampler, refiner: how many "
                                        "subjects (16 for fit, 8 for the others)."),
    model: Path | None = typer.Option(None, "--model", help="generate, upsampler, refiner: the model folder "
                                      "(default: the shipped one)."),
    settings: list[str] = typer.Option([], "--set", help="fit only: a FitConfig field, KEY=VALUE (repeatable)."),
    device: str = typer.Option("cpu", "--device", help="fit, paper: where to run, cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="paper only: fp32, or bf16 (autocast, as "
                                  "accelerate's mixed precision)."),
    batch: int = typer.Option(1, "--batch", min=1, help="paper only: examples per training step."),
    stages: str | None = typer.Option(None, "--stages", help="paper only: comma-separated stages to time "
                                      "(default: all of fit, base, base_checkpointed, encoder, prior, upsampler, "
                                      "refiner)."),
    fsdp: int = typer.Option(1, "--fsdp", min=1, help="paper only: run the stages that train with --fsdp in "
                             "this many processes, the model sharded across them (one GPU each on cuda)."),
    supersample: int | None = typer.Option(None, "--supersample", min=1, help="fit only: rays per pixel side of "
                                           "the generated ground truth (default: the generator's, 3; 1 is the "
                                           "aliased generator of before 2026-12-05)."),
    record: bool = typer.Option(True, "--record/--no-record", help="Write benchmarks/results/NAME.json."),
) -> None:
    """Run a benchmark; prints a table, then one JSON object with the figures as the last line.
    `rodin bench report` rewrites BENCHMARKS.md from the recorded results."""
    from rodin.bench.cli import run_command

    run_command(name, quick=quick, steps=steps, subjects=subjects, settings=settings, record=record, model=model,
                device=device, precision=precision, batch=batch, stages=stages, fsdp=fsdp, supersample=supersample)


def _register() -> None:
    from rodin.cli import convert, data, fit, render
    from rodin.cli import eval as eval_cli
    from rodin.cli import export as export_cli
    from rodin.cli import generate as generate_cli
    from rodin.cli import train as train_cli

    app.add_typer(data.app, name="data")
    app.add_typer(convert.app, name="convert")
    app.command("fit")(fit.fit)
    app.command("fit-merge")(fit.fit_merge)
    app.command("render")(render.render)
    app.command("demo")(render.demo)
    app.command("export")(export_cli.export)
    app.add_typer(eval_cli.app, name="eval")
    app.add_typer(train_cli.app, name="train")
    app.command("generate")(generate_cli.generate)
    app.command("edit")(generate_cli.edit)


def _close_process_group() -> None:
    """Under `accelerate launch`, leave the process group before the interpreter exits: left to exit
    alone, a process's communication threads are torn down while still joinable, and it can abort
    (SIGABRT, "terminate called without an active exception") after its work is done and saved."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _register()
    if set(argv) & HEAVY_VERBS:
        from rodin.triplane.kernel import tune_allocator

        tune_allocator()
    try:
        try:
            app(args=argv, prog_name="rodin", standalone_mode=True)
        finally:
            _close_process_group()
    except RodinError as err:
        if debug:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except OSError as err:
        if debug:
            raise
        if not err.filename:  # no path named: a bug, reported as one
            typer.echo(f"internal error: {type(err).__name__}: {err} (run with --debug for details)", err=True)
            sys.exit(1)
        # A path that cannot be written or read (read-only, a file where a folder should be, a full
        # disk): the user's environment, not our bug.
        typer.echo(f"error: {err.filename}: {err.strerror or err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # a bug: still one line unless --debug
        if debug:
            raise
        typer.echo(f"internal error: {type(err).__name__}: {err} (run with --debug for details)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
