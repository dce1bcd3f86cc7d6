"""MODEL_CARD.md of a model trained by `rodin train all`, written from its progress record alone.

Every number on the card comes from MODEL/train_all.json (rodin.train.all), so that the card says how
the model was trained (the command), on what (the dataset), where and how long (each stage's machine
and wall time) and what it scores (each stage's figures and the evaluation), and never more than the
record holds: stages not run yet are listed as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Per stage: what it makes, and where that lies in the model folder.
STAGE_NOTES = {
    "data": ("procedural avatars: multi-view renders, portraits, captions; and identities with a few views",
             "WORK/data, WORK/identities (not shipped)"),
    "fit": ("stage 1: a tri-plane per subject and the shared MLP decoder", "decoder/ (tri-planes in WORK/fit)"),
    "encoder": ("the image-text encoder that z lives in, and edit directions measured on labelled portraits",
                "semantic/, edits/"),
    "base": ("stage 2: base diffusion, 3D-aware UNet conditioned on z", "base/"),
    "prior": ("the latent prior (z from a sentence or from nothing) and the prompt reader (z drawn from the "
              "portraits that have what a prompt names)", "prior/, reader/"),
    "upsampler": ("stage 3: upsampler diffusion to the full-resolution tri-plane", "upsampler/"),
    "refiner": ("stage 4: convolutional refiner of renders", "refiner/"),
    "judge": ("the attribute judge that referees the evaluation", "judge/"),
    "eval": ("`rodin eval samples`: FID/KID and attribute distances against held-out subjects",
             "eval_samples.json"),
}

# The figures each stage's row shows (key in its figures, label); the full set follows in the card.
KEY_FIGURES: dict[str, list[tuple[str, str]]] = {
    "data": [("subjects", "subjects"), ("train", "train"), ("heldout", "held out")],
    "fit": [("heldout_psnr_mean", "held-out PSNR dB"), ("heldout_ssim_mean", "held-out SSIM"),
            ("subjects_fitted", "subjects fitted")],
    "encoder": [("image_to_text_top1", "portrait→caption top-1"), ("text_to_image_top1", "caption→portrait top-1"),
                ("steps", "steps")],
    "base": [("heldout_loss", "held-out loss"), ("steps", "steps"), ("train_subjects", "subjects")],
    "prior": [("text_cosine", "text cosine"), ("unconditional_cosine", "unconditional cosine"), ("steps", "steps")],
    "upsampler": [("plane_mse", "plane MSE"), ("enlarged_plane_mse", "enlarged MSE (baseline)"),
                  ("final_loss", "final loss"), ("steps", "steps")],
    "refiner": [("psnr", "PSNR dB"), ("bicubic_psnr", "bicubic PSNR dB"), ("psnr_gain_db", "gain dB"),
                ("steps", "steps")],
    "judge": [("accuracy_mean", "held-out accuracy"), ("majority_mean", "majority baseline"), ("steps", "steps")],
    "eval": [("fid", "FID"), ("fid_floor", "FID floor"), ("kid", "KID"), ("kid_floor", "KID floor"),
             ("attr_tvd_mean", "attribute TVD"), ("attr_tvd_floor_mean", "TVD floor")],
}


def number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value or abs(value) >= 1000:
            return f"{value:,.1f}"
        return f"{value:.4g}"
    return str(value)


def identities_rows(identities: dict[str, Any] | None) -> list[str]:
    """The card's line on the identities the encoder, prior, edits and judge learn from."""
    if not identities:
        return []
    i = identities
    return [f"| identities for the encoder, prior, edits and judge | {number(i.get('subjects'))} of their own, "
            f"{i.get('views')} views each, seed {i.get('seed')} (`{i.get('folder')}`) |"]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def machine(info: dict | None) -> str:
    if not info:
        return "—"
    def count(n: Any, noun: str) -> str:
        return f"{n} {noun}" + ("" if n == 1 else "s")

    parts = [str(info.get("cpu", "?")), count(info.get("cores", "?"), "core"),
             count(info.get("threads", "?"), "thread")]
    if info.get("device") not in (None, "cpu"):
        parts.append(str(info["device"]))
    if info.get("load_average") is not None:
        parts.append(f"load {info['load_average']} at start")
    return ", ".join(parts)


def flatten(figures: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every number, flag and short text in nested figures."""
    rows: list[tuple[str, Any]] = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            if len(value) <= 8 and all(isinstance(v, (int, float, str)) for v in value):
                rows.append((name, ", ".join(number(v) for v in value)))
        elif value is None or isinstance(value, (int, float, str, bool)):
            rows.append((name, value))
    return rows


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def key_figures(stage: str, figures: dict) -> str:
    if "skipped" in figures:
        return f"skipped: {figures['skipped']}"
    shown = [f"{label} {number(figures[key])}" for key, label in KEY_FIGURES.get(stage, []) if key in figures]
    return "; ".join(shown) or "—"


def _rays_per_pixel(supersample) -> str:
    if supersample is None:      # recorded before 2026-12-05: the generator shaded one point per pixel
        return "1 (the generator before 2026-12-05)"
    return f"{int(supersample) ** 2} ({int(supersample)} × {int(supersample)})"


def model_card(record: dict, out: Path) -> str:
    """The card's Markdown."""
    from rodin.train.all import STAGES

    out = Path(out)
    stages = record.get("stages", {})
    unfinished = record.get("unfinished", {})
    data = record.get("data", {})
    name = out.resolve().name
    lines = [
        f"# Rodin `{name}`: model card",
        "",
        "Written by `rodin train all` from `train_all.json` after every stage: every figure below comes from "
        "that record. Rerun the command to resume; finished stages are kept.",
        "",
        f"Load it with `RodinPipeline.from_pretrained(\"{out.as_posix()}\")`.",
        "",
        "## Command",
        "",
        "```bash",
        *record.get("commands", []),
        "```",
        "",
    ]
    done = [s for s in STAGES if s in stages]
    if len(done) == len(STAGES):
        lines.append(f"Every stage is trained ({len(STAGES)} of {len(STAGES)}).")
    else:
        lines.append(f"{len(done)} of {len(STAGES)} stages trained; not yet trained: "
                     f"{', '.join(s for s in STAGES if s not in stages)}.")
    held = stages.get("data", {}).get("figures", {})
    split = f" ({held['train']:,} train, {held['heldout']:,} held out)" if "train" in held else ""
    lines += [
        "",
        "## Data",
        "",
        "| | |",
        "| --- | --- |",
        f"| preset | `{record.get('preset')}` |",
        f"| subjects | {number(data.get('subjects'))}{split}, procedural avatars (`rodin data synth`) |",
        f"| views per subject | {number(data.get('views'))} of {data.get('resolution')}² px, "
        f"portrait {data.get('portrait_resolution')}² px |",
        f"| dataset seed | {data.get('seed')} |",
        f"| rays averaged per pixel | {_rays_per_pixel(data.get('supersample'))} |",
        *identities_rows(held.get("identities")),
        f"| work folder (dataset, fit run; not shipped) | `{record.get('work')}` |",
        "",
        "## Stages",
        "",
        "| stage | what it makes | in the model | wall time | machine | figures |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for stage in STAGES:
        what, where = STAGE_NOTES[stage]
        if stage in stages:
            entry = stages[stage]
            sessions = entry.get("sessions", 1)
            wall = duration(entry.get("wall_s")) + (f" ({sessions} sessions)" if sessions > 1 else "")
            lines.append(f"| {stage} | {what} | {where} | {wall} | {_cell(machine(entry.get('machine')))} | "
                         f"{_cell(key_figures(stage, entry.get('figures', {})))} |")
        elif stage in unfinished:
            entry = unfinished[stage]
            lines.append(f"| {stage} | {what} | {where} | {duration(entry.get('seconds'))} so far | "
                         f"{_cell(machine(entry.get('machine')))} | not yet trained (interrupted; resumes) |")
        else:
            lines.append(f"| {stage} | {what} | {where} | — | — | not yet trained |")
    total = sum(s.get("wall_s", 0.0) for s in stages.values())
    lines += ["", f"Wall time of the finished stages: {duration(total)}.", "", "## Evaluation", ""]
    lines += _evaluation(stages)
    lines += ["", "## All figures", "", "What each finished stage returned (also in `train_all.json`).", ""]
    for stage in STAGES:
        if stage not in stages:
            continue
        entry = stages[stage]
        lines += [f"### {stage}", "", f"Finished {entry.get('finished', '?')}; `{entry.get('command', '')}`.", "",
                  "| figure | value |", "| --- | --- |"]
        lines += [f"| {_cell(key)} | {_cell(number(value))} |" for key, value in flatten(entry.get("figures", {}))]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _evaluation(stages: dict) -> list[str]:
    rows = []

    def figures(stage: str) -> dict:
        return stages.get(stage, {}).get("figures", {})

    fit = figures("fit")
    if fit:
        rows.append(f"| fit: PSNR / SSIM of held-out views (never fitted), {number(fit.get('heldout_subjects'))} "
                    f"subjects | {number(fit.get('heldout_psnr_mean'))} dB / {number(fit.get('heldout_ssim_mean'))} "
                    f"(worst subject {number(fit.get('heldout_psnr_min'))} dB) |")
    ev = figures("eval")
    if ev.get("skipped"):
        rows.append(f"| samples: FID / KID | skipped: {_cell(ev['skipped'])} |")
    elif ev:
        rows.append(f"| samples: FID against held-out subjects, beside the real-vs-real floor "
                    f"({number(ev.get('samples'))} samples, judge features) | {number(ev.get('fid'))} vs floor "
                    f"{number(ev.get('fid_floor'))} (ratio {number(ev.get('fid_ratio'))}; goal ≤ 2) |")
        rows.append(f"| samples: KID | {number(ev.get('kid'))} ± {number(ev.get('kid_std'))} vs floor "
                    f"{number(ev.get('kid_floor'))} |")
        if "attr_tvd_mean" in ev:
            rows.append(f"| samples: attribute distance (TVD, mean over attributes) | "
                        f"{number(ev.get('attr_tvd_mean'))} vs floor {number(ev.get('attr_tvd_floor_mean'))} |")
    judge = figures("judge")
    if judge:
        rows.append(f"| judge: held-out accuracy (mean over attributes) | {number(judge.get('accuracy_mean'))} vs "
                    f"majority {number(judge.get('majority_mean'))} |")
    enc = figures("encoder")
    if "image_to_text_top1" in enc:
        rows.append(f"| encoder: portrait→caption / caption→portrait top-1 among {number(enc.get('subjects'))} "
                    f"held-out subjects | {number(enc['image_to_text_top1'])} / {number(enc['text_to_image_top1'])} |")
    prior = figures("prior")
    if "text_cosine" in prior:
        rows.append(f"| prior: cosine of z drawn for a caption with its subject's z (no caption: chance) | "
                    f"{number(prior['text_cosine'])} (no caption {number(prior.get('unconditional_cosine'))}) |")
    base = figures("base")
    if "heldout_loss" in base:
        rows.append(f"| base: held-out denoising loss | {number(base['heldout_loss'])} |")
    up = figures("upsampler")
    if "plane_mse" in up:
        rows.append(f"| upsampler: plane MSE against fitted planes | {number(up['plane_mse'])} vs enlarged "
                    f"{number(up.get('enlarged_plane_mse'))} |")
    ref = figures("refiner")
    if "psnr" in ref:
        rows.append(f"| refiner: PSNR of refined views ({ref.get('figures_on', '?')} subjects) | "
                    f"{number(ref['psnr'])} dB vs bicubic {number(ref.get('bicubic_psnr'))} dB |")
    if not rows:
        return ["Nothing measured yet."]
    return ["| measure | value |", "| --- | --- |", *rows]


__all__ = ["KEY_FIGURES", "STAGE_NOTES", "flatten", "model_card"]
