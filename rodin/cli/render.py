"""`rodin render` and `rodin demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from rodin.config import get_preset


def render(
    run: Path = typer.Argument(..., help="An avatar file (avatar.safetensors) or a fit run folder."),
    out: Path = typer.Option(..., "--out", help="Output: .mp4 or .gif turntable, or .png grid of views."),
    subject: str | None = typer.Option(None, "--subject", help="Subject id (default: the first fitted)."),
    frames: int = typer.Option(48, "--frames", min=1, max=720, help="Frames around the turntable."),
    resolution: int = typer.Option(128, "--resolution", min=8, max=2048, help="Image side, pixels."),
    elevation: float = typer.Option(10.0, "--elevation", help="Camera elevation, degrees."),
    preset: str = typer.Option("small", "--preset", help="Render settings of this preset."),
) -> None:
    """Render an avatar or a fitted tri-plane: a turntable video or a grid of views."""
    from rodin.cli.export import fitted_row, open_run
    from rodin.errors import DataError
    from rodin.render.turntable import IMAGE_SUFFIXES, VIDEO_SUFFIXES, render_turntable, write_frames

    if out.suffix.lower() not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
        raise DataError(f"{out}: unknown output type {out.suffix!r}; use .mp4, .gif or .png")
    render_config = get_preset(preset).render
    if run.is_file():
        from rodin.pipeline import Avatar

        avatar = Avatar.load(run)
        planes, decoder, name = avatar.planes, avatar.decoder, run.stem
        render_config = avatar.render_config
    else:
        store, decoder = open_run(run)
        row = fitted_row(store, run, subject)
        planes, name = store.get(row), store.ids[row]
    images = render_turntable(planes, decoder, render_config, frames=frames, resolution=resolution,
                              elevation=elevation, progress=True)
    write_frames(images, out)
    typer.echo(f"wrote {out} ({name}, {frames} frames at {resolution}²)")


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo writes."),
    subjects: int = typer.Option(4, "--subjects", min=1, max=64, help="Avatars to synthesise and fit."),
) -> None:
    """Synthesise new avatars, fit them as tri-planes with the shipped decoder, render turntables."""
    from rodin.data.contact import contact_sheet
    from rodin.data.synth import synth_dataset
    from rodin.errors import DataError
    from rodin.fit.run import fit_dataset
    from rodin.io import write_json
    from rodin.paths import shipped_model
    from rodin.render.turntable import write_frames

    preset = get_preset("small")
    decoder = shipped_model("small") / "decoder"
    if not (decoder / "model.safetensors").is_file():
        raise DataError(f"{decoder}: the shipped decoder is missing; `git checkout models/` restores it")
    data = out / "data"
    typer.echo(f"1/4 synthesising {subjects} new avatars into {data}")
    synth_dataset(data, subjects=subjects, views=preset.data.views, resolution=preset.data.resolution,
                  seed=2024, portrait_resolution=128)
    contact_sheet(data, out / "avatars.png")
    typer.echo(f"    contact sheet: {out / 'avatars.png'}")
    typer.echo("2/4 fitting their tri-planes with the shipped decoder (small preset)")
    metrics = fit_dataset(data, out / "fit", preset=preset, decoder_path=decoder,
                          log=lambda m: typer.echo(m, err=True))
    typer.echo(f"    held-out views: PSNR {metrics['heldout_psnr_mean']:.2f} dB, "
               f"SSIM {metrics['heldout_ssim_mean']:.3f}")
    typer.echo("3/4 rendering turntables")
    first = sorted(p.name for p in data.iterdir() if p.is_dir())[0]
    render(out / "fit", out / "turntable.mp4", subject=first, frames=48, resolution=128, elevation=10.0,
           preset="small")
    render(out / "fit", out / "views.png", subject=first, frames=8, resolution=128, elevation=10.0,
           preset="small")
    written = ["avatars.png", "turntable.mp4", "views.png", "metrics.json"]
    model = shipped_model("small")
    if (model / "model_index.json").is_file() and (model / "base").is_dir():
        from rodin.io import png_bytes, write_atomic
        from rodin.pipeline import RodinPipeline, sample_sheet
        from rodin.train.base import portrait_paths

        typer.echo("4/4 generating avatars from the same portraits with the shipped base model")
        pipe = RodinPipeline.from_pretrained(model)
        ids = sorted(p.name for p in data.iterdir() if p.is_dir())
        portraits = portrait_paths(data, ids)
        write_atomic(out / "generated.png", png_bytes(sample_sheet(pipe, portraits + [None, None], resolution=96)))
        avatar = pipe(image=portraits[0], seed=0)
        avatar.save(out / "generated.safetensors")
        write_frames(avatar.turntable(frames=48, resolution=128), out / "generated_turntable.mp4")
        written += ["generated.png", "generated_turntable.mp4", "generated.safetensors"]
    write_json(out / "metrics.json", metrics)
    typer.echo("done: " + ", ".join(f"{out}/{name}" for name in written))
