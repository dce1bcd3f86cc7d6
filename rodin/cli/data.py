"""`rodin data`: make the procedural avatar dataset and look at it."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Procedural avatar datasets: synthesise subjects, show contact sheets.",
                  no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (resumes if it exists)."),
    subjects: int = typer.Option(8, "--subjects", min=1, help="Number of subjects."),
    views: int = typer.Option(32, "--views", min=1, help="Views per subject."),
    resolution: int = typer.Option(64, "--resolution", min=8, help="View resolution (pixels, square)."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed: subject i depends only on (seed, i)."),
    portrait_resolution: int = typer.Option(128, "--portrait-resolution", min=8,
                                            help="Frontal portrait resolution (pixels)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes rendering subjects in parallel."),
) -> None:
    """Synthesise procedural avatars as NeRF-synthetic subject folders plus index.json."""
    from rodin.data.synth import synth_dataset

    path = synth_dataset(out, subjects=subjects, views=views, resolution=resolution, seed=seed,
                         portrait_resolution=portrait_resolution, workers=workers, progress=True)
    typer.echo(f"wrote {subjects} subjects to {path}")


@app.command("show")
def show(
    source: Path = typer.Argument(..., help="A subject folder or a dataset folder."),
    out: Path = typer.Option(Path("grid.png"), "--out", help="PNG to write."),
    max_subjects: int = typer.Option(16, "--max-subjects", min=1, help="Show at most this many subjects."),
    views: int = typer.Option(4, "--views", min=0, help="Views per subject beside the portrait."),
    captions: bool = typer.Option(True, "--captions/--no-captions", help="Write captions under subjects."),
) -> None:
    """Write a contact sheet: portrait and a few views per subject, on white, with captions."""
    from rodin.data.contact import contact_sheet

    path = contact_sheet(source, out, max_subjects=max_subjects, views=views, captions=captions)
    typer.echo(f"wrote {path}")
