"""`rodin eval`: measure what a run or model makes. `rodin eval fit RUN` scores a fit run.

Per subject: held-out view PSNR/SSIM (as `rodin fit` recorded them in RUN/subject_metrics.json,
recomputed only where missing) and geometry, the mesh `rodin export` would write against the
subject's ground-truth mesh.ply (Chamfer distance and F-score, `rodin.eval.geometry`).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rodin.eval.geometry import DEFAULT_POINTS, DEFAULT_TAU

app = typer.Typer(help="Evaluate what a run or model makes.", no_args_is_help=True)


def _read_json(path: Path) -> dict | None:
    from rodin.errors import DataError

    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: must hold a JSON object")
    return value


def _data_folder(run: Path, given: Path | None, recorded: str | None) -> Path | None:
    """--data, else the folder `rodin fit` recorded (relative to here, or to a folder above RUN)."""
    from rodin.errors import DataError

    if given is not None:
        if not given.is_dir():
            raise DataError(f"{given}: no such data folder")
        return given
    if not recorded:
        return None
    path = Path(recorded)
    if path.is_absolute():
        return path if path.is_dir() else None
    for base in (Path.cwd(), *run.resolve().parents):
        if (base / path).is_dir():
            return base / path
    return None


def _preset(config: dict | None):
    """The preset the run was fitted with, its render and fit settings as recorded."""
    import dataclasses

    from rodin.config import FitConfig, RenderConfig, from_dict, get_preset

    config = config or {}
    preset = get_preset(str(config.get("preset", "small")))
    if isinstance(config.get("render"), dict):
        preset = dataclasses.replace(preset, render=from_dict(RenderConfig, config["render"]))
    if isinstance(config.get("fit"), dict):
        preset = dataclasses.replace(preset, fit=from_dict(FitConfig, config["fit"]))
    return preset


def _load_options(run: Path, config: dict | None):
    """How `rodin fit` read the subjects (up axis, bound), so that meshes land in the same frame."""
    from rodin.errors import DataError
    from rodin.fit.run import LoadOptions

    recorded = (config or {}).get("load")
    if not isinstance(recorded, dict):
        return LoadOptions()
    try:
        return LoadOptions(**recorded)
    except TypeError as err:
        raise DataError(f"{run / 'fit_config.json'}: malformed \"load\" block ({err})") from None


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@app.command("fit")
def fit(
    run: Path = typer.Argument(..., help="A fit run folder (holds decoder/, triplanes/, metrics)."),
    data: Path | None = typer.Option(None, "--data", help="The dataset it was fitted on "
                                     "(default: the folder recorded in RUN/fit_config.json)."),
    subjects: int | None = typer.Option(None, "--subjects", min=1, help="Score only the first N fitted subjects."),
    resolution: int = typer.Option(128, "--resolution", min=16, max=512,
                                   help="Marching-cubes grid nodes per axis over the box."),
    points: int = typer.Option(DEFAULT_POINTS, "--points", min=100, help="Surface samples per mesh."),
    tau: float = typer.Option(DEFAULT_TAU, "--tau", min=1e-6, help="F-score distance, world units."),
) -> None:
    """Score a fit run: held-out PSNR/SSIM and mesh Chamfer / F-score against ground truth.

    Prints a table, then one JSON object with the aggregate figures as the last line; writes
    everything, per subject too, to RUN/eval_fit.json.
    """
    import sys
    import time

    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from rodin.cli.export import fitted_row, open_run
    from rodin.data.nerf import is_subject, read_transforms
    from rodin.errors import DataError, RodinError
    from rodin.eval.geometry import compare_meshes, load_reference_mesh
    from rodin.fit.run import SubjectSource, heldout_metrics, load_fit_subject
    from rodin.io import write_json
    from rodin.render.mesh import extract_mesh

    began = time.perf_counter()
    store, decoder = open_run(run)
    fitted_row(store, run, None)                              # refuses a run with nothing fitted
    config = _read_json(run / "fit_config.json")
    recorded = _read_json(run / "subject_metrics.json") or {}
    folder = _data_folder(run, data, (config or {}).get("data"))
    if folder is None:
        typer.echo(f"note: no data folder (give --data): {run} is scored without geometry", err=True)
    load = _load_options(run, config)
    preset = _preset(config)
    rows = [i for i, done in enumerate(store.done) if done][:subjects]

    def subject_folder(sid: str) -> Path | None:
        if folder is None:
            return None
        if is_subject(folder / sid):
            return folder / sid
        return folder if folder.name == sid and is_subject(folder) else None

    results: dict[str, dict] = {}
    for row in tqdm(rows, desc="eval fit", unit="subject", file=sys.stderr, leave=False):
        sid = store.ids[row]
        where = subject_folder(sid)
        entry: dict = {"split": store.splits[row]}
        images = recorded.get(sid) or {}
        if not images and where is not None:                   # not recorded: render the held-out views
            subject = load_fit_subject(SubjectSource(sid, where, store.splits[row]), config=preset.fit,
                                       options=load)
            images = heldout_metrics(subject, store.get(row)[None], decoder, preset)
        entry["psnr"], entry["ssim"] = images.get("psnr"), images.get("ssim")
        entry["psnr_min"] = images.get("psnr_min")
        start = time.perf_counter()
        try:
            mesh = extract_mesh(store.get(row), decoder, resolution=resolution)
            entry.update(vertices=len(mesh.vertices), faces=len(mesh.faces))
            transforms = read_transforms(where) if where is not None else None
            if transforms is not None and transforms.mesh is not None:
                reference = load_reference_mesh(transforms.mesh,
                                                transforms.world_from_file(up=load.up, bound=load.bound).numpy())
                scores = compare_meshes(mesh, reference, tau=tau, points=points)
                entry.update(chamfer=scores.chamfer, fscore=scores.fscore, precision=scores.precision,
                             recall=scores.recall)
            elif where is not None:
                entry["note"] = "no mesh.ply in the subject folder"
            elif folder is not None:
                entry["note"] = f"no subject folder {sid} in {folder}"
        except RodinError as err:
            entry["error"] = str(err)
        entry["geometry_s"] = round(time.perf_counter() - start, 2)
        results[sid] = entry

    if not results:
        raise DataError(f"{run}: no fitted subject to score")
    per = list(results.values())
    summary = {
        "run": str(run), "data": str(folder) if folder is not None else None, "subjects": len(results),
        "resolution": resolution, "tau": tau, "points": points,
        "psnr_mean": _mean([e["psnr"] for e in per]), "ssim_mean": _mean([e["ssim"] for e in per]),
        "chamfer_mean": _mean([e.get("chamfer") for e in per]),
        "fscore_mean": _mean([e.get("fscore") for e in per]),
        "geometry_subjects": sum(1 for e in per if e.get("chamfer") is not None),
        "geometry_failed": sum(1 for e in per if "error" in e),
        "geometry_s_mean": _mean([e["geometry_s"] for e in per]),
        "seconds": round(time.perf_counter() - began, 1),
    }
    write_json(run / "eval_fit.json", {**summary, "per_subject": results})

    table = Table(title=f"rodin eval fit {run}  (geometry at {resolution}³, F-score at τ = {tau:g})")
    for name, justify in (("subject", "left"), ("split", "left"), ("PSNR dB", "right"), ("SSIM", "right"),
                          ("Chamfer", "right"), (f"F@{tau:g}", "right"), ("faces", "right"), ("s", "right")):
        table.add_column(name, justify=justify)
    for sid, e in results.items():
        faces = str(e["faces"]) if "faces" in e else e.get("error", "—")[:40]
        table.add_row(sid, e["split"], _fmt(e["psnr"], 2), _fmt(e["ssim"], 3), _fmt(e.get("chamfer"), 4),
                      _fmt(e.get("fscore"), 3), faces, f"{e['geometry_s']:.1f}")
    table.add_row("mean", "", _fmt(summary["psnr_mean"], 2), _fmt(summary["ssim_mean"], 3),
                  _fmt(summary["chamfer_mean"], 4), _fmt(summary["fscore_mean"], 3), "", "", style="bold")
    Console(stderr=False).print(table)
    print(json.dumps(summary), flush=True)


@app.command("sheet")
def sheet(
    model: Path = typer.Argument(..., help="A model folder (rodin train base output)."),
    data: Path = typer.Option(..., "--data", help="A dataset whose held-out subjects give the portraits."),
    out: Path = typer.Option(Path("sheet.png"), "--out", help="The PNG contact sheet to write."),
    count: int = typer.Option(8, "--count", min=1, max=64, help="Held-out subjects (rows)."),
    unconditional: int = typer.Option(4, "--unconditional", min=0, max=64, help="Extra rows sampled without z."),
    resolution: int = typer.Option(64, "--resolution", min=16, max=512, help="Side of each rendered view."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed of the first row (then +1 per row)."),
    guidance: float | None = typer.Option(None, "--guidance", min=0.0, help="Classifier-free guidance scale."),
) -> None:
    """Look at samples: per held-out subject its portrait, then the avatar generated from it at 4 angles."""
    from rodin.errors import DataError
    from rodin.fit.run import list_sources
    from rodin.io import png_bytes, write_atomic
    from rodin.pipeline import SHEET_AZIMUTHS, RodinPipeline, sample_sheet
    from rodin.train.base import portrait_paths

    pipe = RodinPipeline.from_pretrained(model)
    sources = [s for s in list_sources(data) if s.split != "train"][:count]
    if not sources:
        raise DataError(f"{data}: no held-out (val/test) subjects to take portraits from")
    portraits: list = portrait_paths(data, [s.id for s in sources]) + [None] * unconditional
    image = sample_sheet(pipe, portraits, seed=seed, resolution=resolution, guidance_scale=guidance)
    write_atomic(out, png_bytes(image))
    typer.echo(f"wrote {out} ({len(sources)} conditioned rows, {unconditional} unconditional; columns: portrait, "
               f"then azimuth {', '.join(f'{a:g}' for a in SHEET_AZIMUTHS)})")


@app.command("semantic")
def semantic(
    model: Path = typer.Argument(..., help="A model folder with a semantic encoder, a prior and a base model."),
    data: Path = typer.Option(..., "--data", help="A generated dataset whose held-out subjects are the cases."),
    judge: Path | None = typer.Option(None, "--judge", help="Attribute judge folder (default: MODEL/judge, else "
                                      "the shipped one)."),
    subjects: int = typer.Option(100, "--subjects", min=1, help="Held-out portraits (portrait cases)."),
    prompts: int = typer.Option(100, "--prompts", min=1, help="Paraphrased prompts (text cases)."),
    edits: int = typer.Option(100, "--edits", min=1, help="Edits of held-out portraits' avatars."),
    strength: float = typer.Option(1.0, "--strength", min=0.0, max=4.0, help="Edit strength."),
    seed: int = typer.Option(0, "--seed", help="Seed of the cases and the sampling noise."),
    steps: int | None = typer.Option(None, "--steps", min=1, max=1000, help="Sampling steps (default: the model's)."),
) -> None:
    """Attribute accuracy of avatars from portraits, prompts and edits, read by the attribute judge."""
    from rich.console import Console
    from rich.table import Table

    from rodin.errors import DataError
    from rodin.eval.semantic import evaluate_semantic
    from rodin.io import write_json
    from rodin.paths import default_model
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.judge import load_judge

    pipe = RodinPipeline.from_pretrained(model)
    candidates = [judge] if judge is not None else [model / "judge", default_model(text=True) / "judge"]
    found = next((c for c in candidates if (c / "config.json").is_file()), None)
    if found is None:
        raise DataError(f"{candidates[0]}: no attribute judge; train one with `rodin train judge` or pass --judge")
    figures = evaluate_semantic(pipe, load_judge(found).eval(), data, subjects=subjects, prompts=prompts,
                                edits=edits, strength=strength, seed=seed, steps=steps,
                                log=lambda m: typer.echo(m, err=True))
    figures["judge"] = str(found)
    table = Table(title=f"semantic evaluation of {model}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.3f}")
        elif isinstance(value, dict):
            table.add_row(key, ", ".join(f"{k} {v:.2f}" for k, v in value.items()))
    Console().print(table)
    write_json(model / "eval_semantic.json", figures)
    print(json.dumps(figures), flush=True)
