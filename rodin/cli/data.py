"""`rodin data`: make the procedural avatar dataset, render a user's meshes with Blender, look at them."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Avatar datasets: synthesise subjects, render your meshes with Blender, show contact sheets.",
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
    supersample: int = typer.Option(3, "--supersample", min=1,
                                    help="Rays per pixel side, averaged (3: 9 per pixel). 1 shades one point per "
                                         "pixel, as datasets made before 2026-12-05 did (aliased texture)."),
) -> None:
    """Synthesise procedural avatars as NeRF-synthetic subject folders plus index.json."""
    from rodin.data.synth import synth_dataset

    path = synth_dataset(out, subjects=subjects, views=views, resolution=resolution, seed=seed,
                         portrait_resolution=portrait_resolution, supersample=supersample, workers=workers,
                         progress=True)
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


@app.command("render-meshes")
def render_meshes(
    meshes: Path = typer.Option(..., "--meshes", help="Folder of meshes (.obj .glb .gltf .fbx .ply, searched "
                                "recursively); a sidecar NAME.txt beside a mesh is its caption."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (resumes if it exists)."),
    views: int = typer.Option(32, "--views", min=1, help="Views per subject."),
    resolution: int = typer.Option(128, "--resolution", min=8, help="View resolution (pixels, square)."),
    portrait_resolution: int = typer.Option(128, "--portrait-resolution", min=8,
                                            help="Frontal portrait resolution (pixels)."),
    engine: str = typer.Option("cycles", "--engine", help="Blender engine: cycles (CPU, default), eevee "
                               "(needs OpenGL; slow in software) or workbench (fast preview, no light rig)."),
    samples: int = typer.Option(32, "--samples", min=1, help="Samples per pixel (Cycles paths; EEVEE and "
                                "workbench anti-aliasing)."),
    forward: str = typer.Option("+z", "--forward", help="The asset's forward axis, where its face looks "
                                "(+x -x +y -y +z -z, in the file's own coordinates)."),
    up: str = typer.Option("+y", "--up", help="The asset's up axis (+y for glTF, OBJ, FBX; often +z for scans)."),
    blender: str | None = typer.Option(None, "--blender", help="Blender executable (default: blender on PATH)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Blender processes rendering meshes in parallel."),
) -> None:
    """Render your meshes with Blender into NeRF-synthetic subject folders plus index.json.

    Each mesh is centred and scaled into the world box, turned to y-up facing +z, lit by a neutral
    studio rig and rendered with its own materials on a transparent background. Broken meshes are
    reported and skipped (exit code 1 at the end); finished subjects are skipped when run again.
    """
    from rodin.data.blender import MeshRenderOptions
    from rodin.data.blender import render_meshes as run

    options = MeshRenderOptions(views=views, resolution=resolution, portrait_resolution=portrait_resolution,
                                engine=engine.lower(), samples=samples, forward=forward, up=up)

    def warn(source: str, why: str) -> None:
        typer.echo(f"warning: {source}: {why}; skipped", err=True)

    report = run(meshes, out, options=options, blender=blender, workers=workers, progress=True, on_failure=warn)
    typer.echo(f"rendered {len(report.rendered)}, kept {len(report.skipped)} complete, failed {len(report.failed)} "
               f"in {report.seconds:.1f} s; dataset in {out}")
    if report.failed:
        raise typer.Exit(1)
