"""Benchmark: procedural avatar synthesis, subjects per minute at 32 views of 64^2 (+ 128^2 portrait,
mesh and PNG writing), in one process and, on machines with two or more cores, in two. Pixels are the
generator's default supersampling (SUPERSAMPLE rays per side, averaged)."""

from __future__ import annotations

import os
import tempfile
import time

from rodin.bench import BenchResult

VIEWS = 32
RESOLUTION = 64
PORTRAIT = 128


def _time(subjects: int, workers: int, supersample: int | None = None) -> float:
    from rodin.data.synth import SUPERSAMPLE, synth_dataset

    with tempfile.TemporaryDirectory(prefix="rodin-bench-synth-") as tmp:
        # With workers > 1 the time includes starting the processes (a second or two of imports).
        start = time.perf_counter()
        synth_dataset(os.path.join(tmp, "data"), subjects=subjects, views=VIEWS, resolution=RESOLUTION,
                      portrait_resolution=PORTRAIT, seed=0, progress=False, workers=workers,
                      supersample=SUPERSAMPLE if supersample is None else supersample)
        return time.perf_counter() - start


def run(*, quick: bool = False) -> BenchResult:
    from rodin.data.synth import SUPERSAMPLE, synth_dataset

    subjects = 4 if quick else 24
    with tempfile.TemporaryDirectory(prefix="rodin-bench-synth-") as tmp:   # warm-up: imports, caches
        synth_dataset(tmp, subjects=1, views=2, resolution=16, portrait_resolution=16, progress=False)
    seconds = _time(subjects, 1)
    figures = {
        "subjects": subjects,
        "views": VIEWS,
        "resolution": RESOLUTION,
        "portrait_resolution": PORTRAIT,
        "supersample": SUPERSAMPLE,
        "workers": 1,
        "seconds_per_subject": round(seconds / subjects, 4),
        "subjects_per_min": round(60.0 * subjects / seconds, 2),
    }
    rows = [
        ("subjects", str(subjects)),
        ("views x resolution", f"{VIEWS} x {RESOLUTION}^2 (+ {PORTRAIT}^2 portrait, mesh)"),
        ("seconds / subject (1 process)", f"{seconds / subjects:.3f}"),
        ("subjects / min (1 process)", f"{60.0 * subjects / seconds:.1f}"),
    ]
    cores = os.cpu_count() or 1
    if cores >= 2 and not quick:
        seconds2 = _time(subjects, 2)
        figures["subjects_per_min_2_workers"] = round(60.0 * subjects / seconds2, 2)
        rows.append(("subjects / min (2 processes)", f"{60.0 * subjects / seconds2:.1f}"))
    if SUPERSAMPLE > 1:
        # The price of averaged pixels, in the same run: one shaded point per pixel (the generator before).
        seconds1 = _time(subjects, 1, supersample=1)
        figures["subjects_per_min_supersample_1"] = round(60.0 * subjects / seconds1, 2)
        rows.append(("subjects / min (1 process, 1 ray per pixel)", f"{60.0 * subjects / seconds1:.1f}"))
    return BenchResult(title="synth: procedural avatars", rows=rows, figures=figures)
