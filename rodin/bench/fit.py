"""`rodin bench fit`: fitting speed and held-out quality at the small preset, decoder frozen (on the CPU,
or on a GPU with `--device cuda`).

Subjects come from a seed the shipped decoder never saw; the decoder is the shipped one
(models/small/decoder) unless another is given.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

from rodin.bench import BenchResult
from rodin.config import get_preset
from rodin.errors import DataError
from rodin.paths import shipped_model

BENCH_SEED = 1000   # not the seed of any training set


def run(*, quick: bool = False, decoder: Path | None = None, subjects: int | None = None,
        steps: int | None = None, overrides: dict | None = None, device: str = "cpu",
        supersample: int | None = None) -> BenchResult:
    """`overrides` replace FitConfig fields by name (checked like a config file), so a tuning run is one
    command: `rodin bench fit --set plane_lr=0.04`."""
    from rodin.config import FitConfig, from_dict
    from rodin.data.synth import SUPERSAMPLE, synth_dataset
    from rodin.fit.run import fit_dataset

    preset = get_preset("small")
    changes = dict(overrides or {})
    if steps is not None:
        changes["steps"] = steps
    if changes:
        preset = dataclasses.replace(preset, fit=from_dict(FitConfig, {**dataclasses.asdict(preset.fit), **changes}))
    decoder = Path(decoder) if decoder else shipped_model("small") / "decoder"
    if not (decoder / "model.safetensors").is_file():
        raise DataError(f"{decoder}: no fitted decoder; run `rodin fit` on a small-preset dataset first "
                        "or pass one")
    count = subjects or (4 if quick else 16)
    supersample = SUPERSAMPLE if supersample is None else supersample
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        # Generated in parallel (the same subjects whatever the workers; not part of the timed fit), so that
        # a GPU machine's fit of many subjects does not wait on one core drawing them.
        workers = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, count, 8))
        synth_dataset(data, subjects=count, views=preset.data.views, resolution=preset.data.resolution,
                      seed=BENCH_SEED, portrait_resolution=64, supersample=supersample, progress=False,
                      workers=workers)
        start = time.perf_counter()
        metrics = fit_dataset(data, Path(tmp) / "run", preset=preset, decoder_path=decoder, device=device,
                              show_progress=False, log=lambda m: None)
        total = time.perf_counter() - start
    fit_seconds = total - metrics["eval_s"]
    figures = {
        "subjects": count,
        "views": preset.data.views,
        "resolution": preset.data.resolution,
        "supersample": supersample,
        "steps": preset.fit.steps,
        "overrides": changes,
        "subjects_per_min": round(count / fit_seconds * 60, 2),
        "subjects_per_min_with_eval": round(count / total * 60, 2),
        "heldout_psnr_mean": round(metrics["heldout_psnr_mean"], 2),
        "heldout_psnr_min": round(metrics["heldout_psnr_min"], 2),
        "heldout_ssim_mean": round(metrics["heldout_ssim_mean"], 4),
        "decoder": str(decoder),
        "device": device,
    }
    rows = [(k.replace("_", " "), str(v)) for k, v in figures.items()]
    return BenchResult(title="Tri-plane fitting, small preset, frozen decoder", rows=rows, figures=figures)
