"""`rodin generate` and `rodin edit`: an avatar from a portrait, a sentence or a seed, changed in words,
with its video, views, mesh and tri-plane."""

from __future__ import annotations

from pathlib import Path

import typer

from rodin.cli.outputs import discard_on_failure

AVATAR_SUFFIX = ".safetensors"


OUTPUT_NAMES = ["avatar.safetensors", "turntable.mp4", "turntable.gif", "views.png", "compare.png", "mesh.glb"]


def _options_check(out: Path, image: Path | None) -> None:
    from rodin.cli.outputs import refuse_overwriting
    from rodin.errors import DataError

    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; give a folder for the outputs")
    if image is not None and not image.is_file():
        raise DataError(f"{image}: portrait not found")
    if image is not None:
        refuse_overwriting(out, image, OUTPUT_NAMES, what="input")


def faint_aware_mesh(avatar, *, resolution: int):
    """The avatar's mesh at the usual surface level; a sample too faint to reach it (an under-trained model
    draws such fog) is meshed at half its peak density instead, with a note, rather than losing the files."""
    from rodin.render.mesh import FaintFieldError

    try:
        return avatar.mesh(resolution=resolution)
    except FaintFieldError as err:
        if not err.peak > 1e-3:
            raise                                   # nothing there at all: no mesh to draw
        level = err.peak / 2
        typer.echo(f"note: {err}; mesh.glb drawn at density {level:.3g} instead (a faint, foggy sample)", err=True)
        return avatar.mesh(resolution=resolution, threshold=level)


def write_outputs(avatar, out: Path, *, frames: int, resolution: int, mesh_resolution: int, mesh: bool,
                  portrait: Path | None = None, before=None) -> None:
    """avatar.safetensors, turntable.mp4/.gif, views.png, mesh.glb; compare.png beside a portrait
    (what the model saw: the prepared crop) or beside the avatar before an edit."""
    import numpy as np

    from rodin.io import png_bytes, to_uint8, write_atomic
    from rodin.render.mesh import write_mesh
    from rodin.render.turntable import grid, write_frames

    out.mkdir(parents=True, exist_ok=True)
    avatar.save(out / "avatar.safetensors")
    turntable = avatar.turntable(frames=frames, resolution=resolution)
    write_frames(turntable, out / "turntable.mp4")
    write_frames(turntable, out / "turntable.gif")
    views = avatar.views(count=8, resolution=resolution)
    write_atomic(out / "views.png", png_bytes(grid(views, 4)))
    if portrait is not None:
        from rodin.semantic.face import prepare_portrait

        seen = prepare_portrait(portrait, size=resolution).pixels.permute(1, 2, 0).numpy()
        write_atomic(out / "compare.png", png_bytes(np.concatenate([to_uint8(seen), views[0], views[1]], axis=1)))
    if before is not None:
        was = before.views(count=8, resolution=resolution)
        pairs = [np.concatenate([was[k], views[k]], axis=0) for k in (0, 1, 7)]
        write_atomic(out / "compare.png", png_bytes(np.concatenate(pairs, axis=1)))
    if mesh:
        write_mesh(faint_aware_mesh(avatar, resolution=mesh_resolution), out / "mesh.glb")
    typer.echo(f"wrote {out}/: " + ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith("."))))


def generate(
    out: Path = typer.Option(..., "--out", help="Folder to write the avatar's files into."),
    image: Path | None = typer.Option(None, "--image", help="A frontal portrait (a render, or a photo)."),
    prompt: str | None = typer.Option(None, "--prompt", help="A sentence describing the avatar."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the avatar itself when neither --image nor --prompt)."),
    edit: str | None = typer.Option(None, "--edit", help="A change in words, e.g. 'with red hair'."),
    strength: float = typer.Option(1.0, "--strength", min=0.0, max=4.0, help="How far the edit moves the avatar."),
    model: Path | None = typer.Option(None, "--model", help="Model folder (default: the shipped small-1k model)."),
    guidance: float | None = typer.Option(None, "--guidance", min=0.0, help="Classifier-free guidance scale."),
    steps: int | None = typer.Option(None, "--steps", min=1, max=1000, help="Sampling steps."),
    frames: int = typer.Option(48, "--frames", min=1, max=720, help="Turntable frames."),
    resolution: int = typer.Option(128, "--resolution", min=16, max=1024, help="Image side of the renders."),
    mesh_resolution: int = typer.Option(128, "--mesh-resolution", min=16, max=512, help="Marching-cubes grid."),
    mesh: bool = typer.Option(True, "--mesh/--no-mesh", help="Also write mesh.glb."),
    portrait_steps: int | None = typer.Option(None, "--portrait-steps", min=0, max=2000,
                                              help="Steps fitting a portrait's avatar to the portrait "
                                                   "(default: the model's; 0: keep the drawn avatar)."),
) -> None:
    """Generate an avatar: avatar.safetensors, turntable.mp4/.gif, views.png, mesh.glb (+ compare.png)."""
    from rodin.paths import default_model
    from rodin.pipeline import RodinPipeline

    _options_check(out, image)
    pipe = RodinPipeline.from_pretrained(model or default_model(text=prompt is not None or edit is not None))
    avatar = pipe(image=image, prompt=prompt, edit=edit, strength=strength, seed=seed, guidance_scale=guidance,
                  steps=steps, portrait_steps=portrait_steps)
    if pipe.last_portrait_note:
        typer.echo(f"note: {pipe.last_portrait_note}", err=True)
    reading = pipe.prompt_reading(prompt) if prompt is not None else None
    if reading:
        typer.echo(f"prompt: read as {reading}", err=True)
    with discard_on_failure(out):
        write_outputs(avatar, out, frames=frames, resolution=resolution, mesh_resolution=mesh_resolution, mesh=mesh,
                      portrait=image)


def edit(
    source: Path = typer.Argument(..., help="An avatar file (avatar.safetensors) or a portrait image."),
    edit: str = typer.Option(..., "--edit", help="The change in words, e.g. 'with red hair' or 'smiling'."),
    out: Path = typer.Option(..., "--out", help="Folder to write the edited avatar's files into."),
    strength: float = typer.Option(1.0, "--strength", min=0.0, max=4.0, help="How far the edit moves the avatar."),
    seed: int = typer.Option(0, "--seed", help="Random seed (for a portrait; an avatar keeps its own)."),
    model: Path | None = typer.Option(None, "--model", help="Model folder (default: the shipped small-1k model)."),
    frames: int = typer.Option(48, "--frames", min=1, max=720, help="Turntable frames."),
    resolution: int = typer.Option(128, "--resolution", min=16, max=1024, help="Image side of the renders."),
    mesh_resolution: int = typer.Option(128, "--mesh-resolution", min=16, max=512, help="Marching-cubes grid."),
    mesh: bool = typer.Option(True, "--mesh/--no-mesh", help="Also write mesh.glb."),
    portrait_steps: int | None = typer.Option(None, "--portrait-steps", min=0, max=2000,
                                              help="Steps fitting a portrait's avatar to the portrait "
                                                   "(default: the model's; 0: keep the drawn avatar)."),
) -> None:
    """Change an avatar (or the avatar of a portrait) in words; compare.png shows before above after."""
    from rodin.paths import default_model
    from rodin.pipeline import Avatar, RodinPipeline

    _options_check(out, None)
    if not source.is_file():
        from rodin.errors import DataError

        raise DataError(f"{source}: not found; give an avatar file (avatar.safetensors) or a portrait image")
    from rodin.cli.outputs import refuse_overwriting

    refuse_overwriting(out, source, OUTPUT_NAMES, what="input")
    pipe = RodinPipeline.from_pretrained(model or default_model(text=True))
    if source.suffix == AVATAR_SUFFIX:
        before = Avatar.load(source)
    else:
        before = pipe(image=source, seed=seed, portrait_steps=portrait_steps)
    after = pipe.edit(before, edit=edit, strength=strength)
    reading = pipe.edit_reading(edit)
    if reading:
        typer.echo(f"edit: {edit!r} read as {reading}", err=True)
    with discard_on_failure(out):
        write_outputs(after, out, frames=frames, resolution=resolution, mesh_resolution=mesh_resolution, mesh=mesh,
                      before=before)
