"""`rodin generate`: an avatar from a portrait or a seed, with its video, views, mesh and tri-plane."""

from __future__ import annotations

from pathlib import Path

import typer


def generate(
    out: Path = typer.Option(..., "--out", help="Folder to write the avatar's files into."),
    image: Path | None = typer.Option(None, "--image", help="A frontal portrait to build the avatar from."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the avatar itself when no --image is given)."),
    prompt: str | None = typer.Option(None, "--prompt", help="Text to build the avatar from (semantic stage)."),
    edit: str | None = typer.Option(None, "--edit", help="A text edit such as 'with red hair' (semantic stage)."),
    model: Path | None = typer.Option(None, "--model", help="Model folder (default: the shipped small model)."),
    guidance: float | None = typer.Option(None, "--guidance", min=0.0, help="Classifier-free guidance scale."),
    steps: int | None = typer.Option(None, "--steps", min=1, max=1000, help="Sampling steps."),
    frames: int = typer.Option(48, "--frames", min=1, max=720, help="Turntable frames."),
    resolution: int = typer.Option(128, "--resolution", min=16, max=1024, help="Image side of the renders."),
    mesh_resolution: int = typer.Option(128, "--mesh-resolution", min=16, max=512, help="Marching-cubes grid."),
    mesh: bool = typer.Option(True, "--mesh/--no-mesh", help="Also write mesh.glb."),
) -> None:
    """Generate an avatar: avatar.safetensors, turntable.mp4/.gif, views.png, mesh.glb (+ compare.png)."""
    import numpy as np

    from rodin.errors import DataError
    from rodin.io import png_bytes, write_atomic
    from rodin.paths import shipped_model
    from rodin.pipeline import RodinPipeline
    from rodin.render.mesh import write_mesh
    from rodin.render.turntable import grid, write_frames

    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; give a folder for the outputs")
    if image is not None and not image.is_file():
        raise DataError(f"{image}: portrait not found")
    pipe = RodinPipeline.from_pretrained(model or shipped_model("small"))
    avatar = pipe(image=image, prompt=prompt, edit=edit, seed=seed, guidance_scale=guidance, steps=steps)
    out.mkdir(parents=True, exist_ok=True)
    avatar.save(out / "avatar.safetensors")
    turntable = avatar.turntable(frames=frames, resolution=resolution)
    write_frames(turntable, out / "turntable.mp4")
    write_frames(turntable, out / "turntable.gif")
    views = avatar.views(count=8, resolution=resolution)
    write_atomic(out / "views.png", png_bytes(grid(views, 4)))
    if image is not None:
        from PIL import Image

        from rodin.semantic.pixel_encoder import square_on_white

        with Image.open(image) as handle:
            portrait = square_on_white(handle, size=resolution).permute(1, 2, 0).numpy()
        side_by_side = np.concatenate([np.clip(portrait * 255 + 0.5, 0, 255).astype(np.uint8), views[0]], axis=1)
        write_atomic(out / "compare.png", png_bytes(side_by_side))
    if mesh:
        write_mesh(avatar.mesh(resolution=mesh_resolution), out / "mesh.glb")
    typer.echo(f"wrote {out}/: " + ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith("."))))
