"""`rodin render` and `rodin demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from rodin.config import get_preset
from rodin.web import DEFAULT_HOST, DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT, DEFAULT_WORKERS


def render(
    run: Path = typer.Argument(..., help="An avatar file (avatar.safetensors) or a fit run folder."),
    out: Path = typer.Option(..., "--out", help="Output: .mp4 or .gif turntable, or .png grid of views."),
    subject: str | None = typer.Option(None, "--subject", help="Subject id (default: the first fitted)."),
    frames: int = typer.Option(48, "--frames", min=1, max=720, help="Frames around the turntable."),
    resolution: int = typer.Option(128, "--resolution", min=8, max=2048, help="Image side, pixels."),
    elevation: float = typer.Option(10.0, "--elevation", help="Camera elevation, degrees."),
    preset: str = typer.Option("small", "--preset", help="Render settings of this preset."),
    refine: bool = typer.Option(True, "--refine/--no-refine", help="An avatar made by a model with a refiner "
                                "(stage 4): render smaller and let it enlarge (default), or volume-render "
                                "every pixel."),
) -> None:
    """Render an avatar or a fitted tri-plane: a turntable video or a grid of views."""
    from rodin.cli.export import fitted_row, open_run
    from rodin.errors import DataError
    from rodin.render.turntable import IMAGE_SUFFIXES, VIDEO_SUFFIXES, render_turntable, write_frames

    if out.suffix.lower() not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
        raise DataError(f"{out}: unknown output type {out.suffix!r}; use .mp4, .gif or .png")
    render_config = get_preset(preset).render
    refiner = None
    if run.is_file():
        from rodin.pipeline import Avatar

        avatar = Avatar.load(run)
        planes, decoder, name = avatar.planes, avatar.decoder, run.stem
        render_config = avatar.render_config
        refiner = avatar.refiner if refine else None
    else:
        store, decoder = open_run(run)
        row = fitted_row(store, run, subject)
        planes, name = store.get(row), store.ids[row]
    images = render_turntable(planes, decoder, render_config, frames=frames, resolution=resolution,
                              elevation=elevation, progress=True, refiner=refiner)
    write_frames(images, out)
    typer.echo(f"wrote {out} ({name}, {frames} frames at {resolution}²)")


EXAMPLE_PROMPT = "a person with curly ginger hair and round glasses, in a green hoodie"
EXAMPLE_EDIT = "with blue hair"


def demo(
    batch: bool = typer.Option(False, "--batch", help="Instead of the web page: write example avatars to --out."),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address the web page listens on (0.0.0.0: every "
                             "network this machine is on)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port of the web page."),
    max_upload_mb: float = typer.Option(DEFAULT_MAX_UPLOAD_MB, "--max-upload-mb", min=0.01, max=1024.0,
                                        help="Largest portrait the page accepts, MB."),
    workers: int = typer.Option(DEFAULT_WORKERS, "--workers", min=1, max=64,
                                help="Requests computed at once; more wait."),
    model: Path | None = typer.Option(None, "--model", help="Model folder for everything (default: the shipped "
                                      "small-1k model)."),
    out: Path | None = typer.Option(None, "--out", help="--batch: folder for everything it writes "
                                    "(default: demo_out)."),
    with_fit: bool = typer.Option(False, "--with-fit", help="--batch: also synthesise 4 new avatars and fit them."),
) -> None:
    """Serve the web demo on localhost (http://127.0.0.1:7860): portrait, prompt or seed, edits, video, mesh.
    With --batch: generate example avatars from a portrait, a photo, a sentence and a seed, and one edit."""
    from rodin.errors import ConfigError

    if batch:
        _demo_batch(out or Path("demo_out"), model, with_fit)
        return
    if out is not None or with_fit:
        raise ConfigError("--out and --with-fit belong to `rodin demo --batch`")
    from rodin.paths import default_model
    from rodin.web.app import serve
    from rodin.web.studio import WebSettings

    settings = WebSettings(image_model=model or default_model(), text_model=model or default_model(text=True),
                           max_upload_mb=max_upload_mb)
    typer.echo(f"serving the web demo on http://{host}:{port} (Ctrl+C stops it)")
    serve(settings=settings, host=host, port=port, workers=workers)


def _demo_batch(out: Path, model: Path | None, with_fit: bool) -> None:
    """Avatars from the shipped model: from a portrait, a photo, a sentence and a seed, and one edit."""
    import time

    from rodin.cli.generate import write_outputs
    from rodin.errors import DataError
    from rodin.paths import default_model, example_file
    from rodin.pipeline import RodinPipeline

    started = time.time()
    image_folder, text_folder = model or default_model(), model or default_model(text=True)
    pipe = RodinPipeline.from_pretrained(image_folder)
    words = pipe if text_folder == image_folder else RodinPipeline.from_pretrained(text_folder)
    if pipe.base is None or words.base is None:
        raise DataError(f"{image_folder}: no base diffusion model; train one with `rodin train base`")
    settings = dict(frames=24, resolution=128, mesh_resolution=96, mesh=True)
    portrait = example_file("portrait.png")
    runs: list[tuple[str, str, object, dict]] = [
        ("portrait", f"from the example portrait {portrait}", pipe, dict(image=portrait)),
        ("random", "from seed 7, no portrait and no prompt", pipe, dict(seed=7))]
    text = words.semantic is not None and words.prior is not None
    if text:
        photo = example_file("photo.png")
        runs += [("photo", f"from a photograph ({photo}: face found, cropped, background removed)", words,
                  dict(image=photo)),
                 ("prompt", f"from the prompt {EXAMPLE_PROMPT!r}", words, dict(prompt=EXAMPLE_PROMPT))]
    made = {}
    for step, (name, what, chosen, inputs) in enumerate(runs, start=1):
        typer.echo(f"{step}/{len(runs) + int(text)} generating an avatar {what} ({chosen.path.name})")
        avatar = chosen(**{"seed": 0, **inputs})
        if chosen.last_portrait_note and "image" in inputs:
            typer.echo(f"    note: {chosen.last_portrait_note}")
        reading = chosen.prompt_reading(inputs["prompt"]) if "prompt" in inputs else None
        if reading:
            typer.echo(f"    read as {reading}")
        write_outputs(avatar, out / name, portrait=inputs.get("image"), **settings)
        made[name] = avatar
    if text:
        typer.echo(f"{len(runs) + 1}/{len(runs) + 1} editing the prompt's avatar: {EXAMPLE_EDIT!r}")
        edited = words.edit(made["prompt"], edit=EXAMPLE_EDIT, strength=1.0)
        reading = words.edit_reading(EXAMPLE_EDIT)
        if reading:
            typer.echo(f"    read as {reading}")
        write_outputs(edited, out / "edit", before=made["prompt"], **settings)
    if with_fit:
        _demo_fit(out / "fit")
    typer.echo(f"done in {time.time() - started:.0f} s: " + ", ".join(
        f"{out / name}/" for name in [*made, *(["edit"] if text else [])]))
    typer.echo("each folder: turntable.mp4/.gif, views.png, mesh.glb, avatar.safetensors (+ compare.png)")


def _demo_fit(out: Path) -> None:
    """Stage 1 on new subjects: synthesise 4 avatars, fit them with the shipped decoder, render one."""
    from rodin.data.contact import contact_sheet
    from rodin.data.synth import synth_dataset
    from rodin.errors import DataError
    from rodin.fit.run import fit_dataset
    from rodin.io import write_json
    from rodin.paths import shipped_model

    preset = get_preset("small")
    decoder = shipped_model("small") / "decoder"
    if not (decoder / "model.safetensors").is_file():
        raise DataError(f"{decoder}: the shipped decoder is missing; `git checkout models/` restores it")
    data = out / "data"
    typer.echo(f"fitting: synthesising 4 new avatars into {data}")
    synth_dataset(data, subjects=4, views=preset.data.views, resolution=preset.data.resolution,
                  seed=2024, portrait_resolution=128)
    contact_sheet(data, out / "avatars.png")
    metrics = fit_dataset(data, out / "fit", preset=preset, decoder_path=decoder,
                          log=lambda m: typer.echo(m, err=True))
    typer.echo(f"    held-out views: PSNR {metrics['heldout_psnr_mean']:.2f} dB, "
               f"SSIM {metrics['heldout_ssim_mean']:.3f}")
    first = sorted(p.name for p in data.iterdir() if p.is_dir())[0]
    render(out / "fit", out / "turntable.mp4", subject=first, frames=48, resolution=128, elevation=10.0,
           preset="small")
    write_json(out / "metrics.json", metrics)
