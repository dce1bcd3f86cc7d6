"""`rodin eval`: measure what a run or model makes. Each verb prints a table, then one JSON object as its
last line, and writes its figures as JSON beside what it measured.

- `fit RUN`: per subject, held-out view PSNR/SSIM (as `rodin fit` recorded them in RUN/subject_metrics.json,
  recomputed only where missing), LPIPS with `--lpips FOLDER` (`rodin.eval.lpips`, views rendered again) and
  geometry, the mesh `rodin export` would write against the subject's ground-truth mesh.ply (Chamfer
  distance and F-score, `rodin.eval.geometry`).
- `sheet MODEL`: a contact sheet to look at; `semantic MODEL`: attribute accuracy (`rodin.eval.semantic`);
  `judge JUDGE`: how far that referee can be trusted on held-out ground truth and fitted tri-planes.
- `samples MODEL`: FID/KID and attribute distances against held-out real subjects (`rodin.eval.samples`).
- `consistency MODEL_OR_AVATAR`: multi-view consistency of turntables (`rodin.eval.consistency`).
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
    lpips_folder: Path | None = typer.Option(None, "--lpips", help="An LPIPS folder (`rodin convert lpips`): also "
                                             "held-out LPIPS, from views rendered again."),
) -> None:
    """Score a fit run: held-out PSNR/SSIM (and LPIPS with --lpips) and mesh Chamfer / F-score against ground
    truth.

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
    from rodin.eval.heldout import render_heldout
    from rodin.eval.lpips import load_lpips
    from rodin.eval.metrics import lpips, psnr, ssim
    from rodin.fit.run import SubjectSource, heldout_metrics, load_fit_subject
    from rodin.io import write_json
    from rodin.render.mesh import extract_mesh

    began = time.perf_counter()
    network = load_lpips(lpips_folder) if lpips_folder is not None else None   # a bad folder fails before work
    store, decoder = open_run(run)
    fitted_row(store, run, None)                              # refuses a run with nothing fitted
    config = _read_json(run / "fit_config.json")
    recorded = _read_json(run / "subject_metrics.json") or {}
    folder = _data_folder(run, data, (config or {}).get("data"))
    if folder is None and network is not None:
        raise DataError(f"{run}: --lpips compares renders with the held-out views, so it needs the data folder "
                        "(give --data)")
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
        if network is not None and where is not None:          # LPIPS needs the renders themselves
            subject = load_fit_subject(SubjectSource(sid, where, store.splits[row]), config=preset.fit,
                                       options=load)
            views = render_heldout(subject, store.get(row)[None], decoder, preset=preset)
            if views is not None:
                entry["lpips"] = float(lpips(views.rendered, views.target, network=network).mean())
                if not images:
                    p = psnr(views.rendered, views.target)
                    images = {"psnr": float(p.mean()), "psnr_min": float(p.min()),
                              "ssim": float(ssim(views.rendered, views.target).mean())}
        elif not images and where is not None:                 # not recorded: render the held-out views
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
        **({"heldout_lpips_mean": _mean([e.get("lpips") for e in per]), "lpips_net": network.config.net,
            "lpips_subjects": sum(1 for e in per if e.get("lpips") is not None)} if network is not None else {}),
        "chamfer_mean": _mean([e.get("chamfer") for e in per]),
        "fscore_mean": _mean([e.get("fscore") for e in per]),
        "geometry_subjects": sum(1 for e in per if e.get("chamfer") is not None),
        "geometry_failed": sum(1 for e in per if "error" in e),
        "geometry_s_mean": _mean([e["geometry_s"] for e in per]),
        "seconds": round(time.perf_counter() - began, 1),
    }
    write_json(run / "eval_fit.json", {**summary, "per_subject": results})

    table = Table(title=f"rodin eval fit {run}  (geometry at {resolution}³, F-score at τ = {tau:g})")
    perceptual = [("LPIPS", "right")] if network is not None else []
    for name, justify in (("subject", "left"), ("split", "left"), ("PSNR dB", "right"), ("SSIM", "right"),
                          *perceptual, ("Chamfer", "right"), (f"F@{tau:g}", "right"), ("faces", "right"),
                          ("s", "right")):
        table.add_column(name, justify=justify)
    for sid, e in results.items():
        faces = str(e["faces"]) if "faces" in e else e.get("error", "—")[:40]
        lpips_cell = [_fmt(e.get("lpips"), 4)] if network is not None else []
        table.add_row(sid, e["split"], _fmt(e["psnr"], 2), _fmt(e["ssim"], 3), *lpips_cell,
                      _fmt(e.get("chamfer"), 4), _fmt(e.get("fscore"), 3), faces, f"{e['geometry_s']:.1f}")
    lpips_mean = [_fmt(summary["heldout_lpips_mean"], 4)] if network is not None else []
    table.add_row("mean", "", _fmt(summary["psnr_mean"], 2), _fmt(summary["ssim_mean"], 3), *lpips_mean,
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
    guidance: float | None = typer.Option(None, "--guidance", min=0.0, max=20.0,
                                          help="Classifier-free guidance scale of the base model (default: the "
                                          "model's)."),
    out: Path | None = typer.Option(None, "--out", help="Where to write the figures (default: "
                                    "MODEL/eval_semantic.json)."),
    training: bool = typer.Option(False, "--training", help="Take the cases from every subject of DATA, training "
                                  "ones too: tells a model that under-fits from one that fails to generalise."),
    portrait_steps: int | None = typer.Option(None, "--portrait-steps", min=0, max=2000,
                                              help="Steps fitting each portrait's avatar to its portrait "
                                              "(default: the model's; 0: judge the drawn avatars only)."),
) -> None:
    """Attribute accuracy of avatars from portraits, prompts and edits, read by the attribute judge."""
    from rich.console import Console
    from rich.table import Table

    from rodin.eval.semantic import evaluate_semantic
    from rodin.io import write_json
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.judge import load_judge

    pipe = RodinPipeline.from_pretrained(model)
    found = _find_judge(model, judge)
    figures = evaluate_semantic(pipe, load_judge(found).eval(), data, subjects=subjects, prompts=prompts,
                                edits=edits, strength=strength, seed=seed, steps=steps, guidance_scale=guidance,
                                include_training=training, portrait_steps=portrait_steps,
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
    write_json(out or model / "eval_semantic.json", figures)
    print(json.dumps(figures), flush=True)


@app.command("judge")
def judge_command(
    judge: Path = typer.Argument(..., help="An attribute judge folder (`rodin train judge`)."),
    data: Path = typer.Option(..., "--data", help="A generated dataset whose held-out (val/test) subjects are "
                              "scored."),
    triplanes: Path | None = typer.Option(None, "--triplanes", help="A fit run of that dataset: also score renders "
                                          "of the fitted tri-planes, as avatars are scored."),
    preset: str | None = typer.Option(None, "--preset", help="Scale preset for the renders and base resolution "
                                      "(default: the one the fit run recorded, else small)."),
    subjects: int | None = typer.Option(None, "--subjects", min=1, help="Use only the first N subjects of DATA."),
    out: Path | None = typer.Option(None, "--out", help="Also write the figures to this JSON file."),
) -> None:
    """How far the attribute judge can be trusted: accuracy on held-out ground truth (and fitted tri-planes)."""
    from rich.console import Console
    from rich.table import Table

    from rodin.config import get_preset
    from rodin.errors import DataError
    from rodin.eval.semantic import evaluate_judge
    from rodin.io import write_json
    from rodin.semantic.judge import load_judge

    if not (judge / "config.json").is_file():
        raise DataError(f"{judge}: not an attribute judge folder (train one with `rodin train judge`)")
    if preset is None and triplanes is not None:
        try:
            preset = json.loads((triplanes / "fit_config.json").read_text())["preset"]
        except (OSError, ValueError, KeyError, TypeError):
            raise DataError(f"{triplanes}: no preset recorded in fit_config.json; pass --preset") from None
    p = get_preset(preset or "small")
    figures = evaluate_judge(load_judge(judge).eval(), data, run=triplanes, render=p.render,
                             base_resolution=p.triplane.base_resolution, subjects=subjects)
    figures["judge"] = str(judge)
    table = Table(title=f"attribute judge {judge} on {data}")
    table.add_column("attribute")
    parts = [k for k in ("views", "portraits", "fitted") if f"{k}_per_attribute" in figures]
    for part in parts:
        table.add_column(part, justify="right")
    table.add_column("majority (views)", justify="right")
    for name in figures["views_per_attribute"]:
        table.add_row(name, *(f"{figures[f'{k}_per_attribute'].get(name, float('nan')):.3f}" for k in parts),
                      f"{figures['views_majority'].get(name, float('nan')):.3f}")
    table.add_row("mean", *(f"{figures[f'{k}_acc']:.3f}" for k in parts), "")
    Console().print(table)
    if out is not None:
        write_json(out, figures)
    print(json.dumps(figures), flush=True)


def _find_judge(model: Path, given: Path | None) -> Path:
    """--judge, else MODEL/judge, else the shipped judge."""
    from rodin.errors import DataError
    from rodin.paths import default_model

    candidates = [given] if given is not None else [model / "judge", default_model(text=True) / "judge"]
    found = next((c for c in candidates if (c / "config.json").is_file()), None)
    if found is None:
        raise DataError(f"{candidates[0]}: no attribute judge; train one with `rodin train judge` or pass --judge")
    return found


def _command(words: list, options: dict) -> str:
    """The command line that reproduces a run (options at their given values)."""
    import shlex

    parts = ["rodin", *map(str, words)]
    for flag, value in options.items():
        if value is not None and value is not False:
            parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


@app.command("samples")
def samples(
    model: Path = typer.Argument(..., help="A model folder with a base model (and a latent prior, if it has one)."),
    data: Path = typer.Option(..., "--data", help="The generated dataset whose held-out (val/test) subjects are "
                              "the real side."),
    count: int = typer.Option(64, "--samples", min=2, help="Unconditional samples (seeds SEED, SEED+1, ...)."),
    views: int = typer.Option(1, "--views", min=0, max=8, help="Views per avatar besides the portrait camera "
                              "(nearest to azimuth 45, -45, 90, ...)."),
    resolution: int = typer.Option(64, "--resolution", min=16, max=512, help="Side of every compared image."),
    features: str = typer.Option("judge", "--features", help="Feature extractor for FID/KID: judge or clip."),
    clip: Path | None = typer.Option(None, "--clip", help="A CLIP folder on disk (Hugging Face layout), for "
                                     "--features clip."),
    judge: Path | None = typer.Option(None, "--judge", help="Attribute judge folder (default: MODEL/judge, else "
                                      "the shipped one)."),
    steps: int | None = typer.Option(None, "--steps", min=1, max=1000, help="Sampling steps (default: the model's)."),
    guidance: float | None = typer.Option(None, "--guidance", min=0.0, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, "--seed", help="First sampling seed; also splits the real subjects in halves."),
    kid_subset: int = typer.Option(100, "--kid-subset", min=2, help="Images per set in each KID subset."),
    sheet: Path | None = typer.Option(None, "--sheet", help="Also write a PNG grid of the samples' images."),
) -> None:
    """FID, KID and attribute distances of unconditional samples against held-out real subjects, beside the
    real-against-real floor. Prints a table, then one JSON object as the last line; writes
    MODEL/eval_samples.json (eval_samples_clip.json for CLIP features)."""
    import time

    import torch
    from rich.console import Console
    from rich.table import Table

    from rodin.bench.record import provenance
    from rodin.eval.features import load_extractor
    from rodin.eval.samples import evaluate_samples
    from rodin.io import png_bytes, to_uint8, write_atomic, write_json
    from rodin.pipeline import RodinPipeline
    from rodin.render.turntable import grid
    from rodin.semantic.judge import load_judge

    command = _command(["eval", "samples", model], {"--data": data, "--samples": count, "--views": views,
                       "--resolution": resolution, "--features": features, "--clip": clip, "--judge": judge,
                       "--steps": steps, "--guidance": guidance, "--seed": seed, "--kid-subset": kid_subset})
    record = provenance(command)
    began = time.perf_counter()
    pipe = RodinPipeline.from_pretrained(model)
    judge_path = _find_judge(model, judge)
    attribute_judge = load_judge(judge_path).eval()
    extractor = load_extractor(features, judge=attribute_judge, clip=clip)
    figures, made = evaluate_samples(pipe, data, extractor=extractor, judge=attribute_judge, samples=count,
                                     views=views, resolution=resolution, steps=steps, guidance_scale=guidance,
                                     seed=seed, kid_subset=kid_subset, log=lambda m: typer.echo(m, err=True))
    figures = {"model": str(model), "data": str(data), "judge": str(judge_path), **figures,
               "seconds": round(time.perf_counter() - began, 1)}
    if sheet is not None:
        tiles = to_uint8(torch.cat([s.pixels for s in made]).permute(0, 2, 3, 1).numpy())
        write_atomic(sheet, png_bytes(grid(tiles, 8 * figures["images_per_avatar"])))
        typer.echo(f"wrote {sheet}", err=True)

    table = Table(title=f"rodin eval samples {model}  ({figures['samples']} samples, {figures['features']} features, "
                        f"halves of {figures['half_sizes'][0]} / {figures['half_sizes'][1]} held-out subjects)")
    for name, justify in (("measure", "left"), ("samples vs real B", "right"), ("floor: real A vs real B", "right")):
        table.add_column(name, justify=justify)
    table.add_row("FID", f"{figures['fid']:.3f}", f"{figures['fid_floor']:.3f}")
    table.add_row("KID", f"{figures['kid']:.4g} ± {figures['kid_std']:.2g}",
                  f"{figures['kid_floor']:.4g} ± {figures['kid_floor_std']:.2g}")
    for name, value in figures.get("attr_tvd", {}).items():
        table.add_row(f"TVD {name}", f"{value:.3f}", f"{figures['attr_tvd_floor'][name]:.3f}")
    if "attr_tvd_mean" in figures:
        table.add_row("TVD mean", f"{figures['attr_tvd_mean']:.3f}", f"{figures['attr_tvd_floor_mean']:.3f}",
                      style="bold")
    ratio = figures["fid_ratio"]
    table.caption = f"FID / floor = {'—' if ratio is None else f'{ratio:.2f}'} (goal ≤ 2); TVD goal ≤ 0.1 each"
    Console().print(table)
    write_json(model / ("eval_samples.json" if features == "judge" else f"eval_samples_{features}.json"),
               {**record, "figures": figures})
    print(json.dumps(figures), flush=True)


@app.command("consistency")
def consistency(
    target: Path = typer.Argument(..., help="A model folder (samples drawn from seeds) or an avatar file "
                                  "(.safetensors, from `rodin generate`)."),
    avatars: int = typer.Option(4, "--avatars", min=1, help="Model only: avatars sampled (seeds SEED, SEED+1, ...)."),
    frames: int = typer.Option(16, "--frames", min=3, max=360, help="Turntable frames (neighbours are 360/N° apart)."),
    resolution: int = typer.Option(64, "--resolution", min=16, max=512, help="Side of each rendered frame."),
    elevation: float = typer.Option(10.0, "--elevation", min=-80.0, max=80.0, help="Turntable elevation, degrees."),
    steps: int | None = typer.Option(None, "--steps", min=1, max=1000, help="Model only: sampling steps."),
    seed: int = typer.Option(0, "--seed", help="Model only: first sampling seed."),
    data: Path | None = typer.Option(None, "--data", help="A generated dataset: its held-out subjects, re-rendered "
                                     "by the generator at the same cameras, give the reference."),
    subjects: int = typer.Option(4, "--subjects", min=1, help="Reference subjects (with --data)."),
) -> None:
    """Multi-view consistency of rendered turntables: each frame warped into its neighbours with its depth,
    masked L1 and PSNR. Prints a table, then one JSON object as the last line; writes MODEL/eval_consistency.json
    or AVATAR.consistency.json."""
    import time

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from rodin.bench.record import provenance
    from rodin.errors import DataError
    from rodin.eval.consistency import ground_truth_views, rendered_views, turntable_consistency
    from rodin.eval.samples import held_out_subjects, sample_planes
    from rodin.io import write_json
    from rodin.pipeline import INDEX, Avatar, RodinPipeline

    command = _command(["eval", "consistency", target], {
        "--avatars": avatars if target.is_dir() else None, "--frames": frames, "--resolution": resolution,
        "--elevation": elevation, "--steps": steps, "--seed": seed if target.is_dir() else None, "--data": data,
        "--subjects": subjects if data is not None else None})
    record = provenance(command)
    began = time.perf_counter()
    if target.is_dir() and (target / INDEX).is_file():
        pipe = RodinPipeline.from_pretrained(target)
        if pipe.base is None:
            raise DataError(f"{target}: this model has no base diffusion model to sample from")
        planes = sample_planes(pipe, [seed + k for k in range(avatars)], steps=steps)
        made = [(f"seed_{seed + k}", one, pipe.decoder, pipe.render) for k, one in enumerate(planes)]
        out = target / "eval_consistency.json"
    elif target.is_file():
        avatar = Avatar.load(target)
        made = [(target.stem, avatar.planes, avatar.decoder, avatar.render_config)]
        out = target.with_name(f"{target.stem}.consistency.json")
    else:
        raise DataError(f"{target}: neither a model folder (with {INDEX}) nor an avatar file")

    rows: dict[str, dict] = {}
    for name, planes, decoder, render in made:
        views = rendered_views(planes, decoder, render, frames=frames, resolution=resolution, elevation=elevation)
        rows[name] = turntable_consistency(views)

    def mean(key: str, entries) -> float | None:
        values = [e[key] for e in entries if e[key] is not None]
        return float(np.mean(values)) if values else None

    figures: dict = {"target": str(target), "avatars": len(rows), "frames": frames, "resolution": resolution,
                     "elevation": elevation, "psnr": mean("psnr", rows.values()), "l1": mean("l1", rows.values()),
                     "coverage": mean("coverage", rows.values()), "pairs": frames * 2}
    reference: dict[str, dict] = {}
    if data is None:
        typer.echo("note: no --data, so no ground-truth reference to read the figures against", err=True)
    else:
        folders = held_out_subjects(data)[:subjects]
        if not folders:
            raise DataError(f"{data}: no held-out (val/test) generated subjects for the reference")
        for folder in folders:
            views = ground_truth_views(folder, frames=frames, resolution=resolution, elevation=elevation)
            reference[folder.name] = turntable_consistency(views)
        figures["reference"] = {"subjects": len(reference), "psnr": mean("psnr", reference.values()),
                                "l1": mean("l1", reference.values()),
                                "coverage": mean("coverage", reference.values())}
    figures["seconds"] = round(time.perf_counter() - began, 1)

    table = Table(title=f"rodin eval consistency {target}  ({frames} frames of {resolution}², neighbours "
                        f"{360 / frames:g}° apart)")
    for name, justify in (("avatar", "left"), ("PSNR dB", "right"), ("L1", "right"), ("coverage", "right")):
        table.add_column(name, justify=justify)
    for name, e in rows.items():
        table.add_row(name, _fmt(e["psnr"], 2), _fmt(e["l1"], 4), _fmt(e["coverage"], 3))
    table.add_row("mean", _fmt(figures["psnr"], 2), _fmt(figures["l1"], 4), _fmt(figures["coverage"], 3), style="bold")
    for name, e in reference.items():
        table.add_row(f"ground truth {name}", _fmt(e["psnr"], 2), _fmt(e["l1"], 4), _fmt(e["coverage"], 3))
    if reference:
        ref = figures["reference"]
        table.add_row("ground truth mean", _fmt(ref["psnr"], 2), _fmt(ref["l1"], 4), _fmt(ref["coverage"], 3),
                      style="bold")
    Console().print(table)
    write_json(out, {**record, "figures": figures, "per_avatar": rows, "per_reference": reference})
    print(json.dumps(figures), flush=True)
