"""`rodin bench generate`: end-to-end latency of `rodin generate --prompt` with a model folder.

What a user waits for, in the order the command does it: loading the model (reported apart, paid
once per process), then per avatar: the prompt through the text encoder and the latent prior, the
base model's sampling (and the upsampler's, when the model has one), 8 views rendered (through the
refiner, when it has one) and a mesh. Peak resident memory of the process is
measured at the end (`ru_maxrss`). The first avatar warms up; figures are medians of the rest.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

from rodin.bench import BenchResult

PROMPTS = ("a person with long blonde hair and sunglasses", "a bald man with a full beard, in a red suit",
           "someone with curly pink hair, smiling", "a person in a blue beanie and a yellow hoodie")


def run(*, quick: bool = False, model: Path | None = None, repeats: int | None = None) -> BenchResult:
    from rodin.paths import default_model
    from rodin.pipeline import RodinPipeline

    started = time.perf_counter()
    pipe = RodinPipeline.from_pretrained(model or default_model(text=True))
    pipe.semantic.encode_texts(["warm-up"])          # the text backbone loads on first use
    load_s = time.perf_counter() - started
    repeats = repeats or (2 if quick else 4)
    stages: dict[str, list[float]] = {"prompt_to_z_s": [], "sample_s": [], "views_s": [], "mesh_s": [],
                                      "latency_s": []}
    for k in range(repeats + 1):
        t0 = time.perf_counter()
        latent = pipe.encode_prompt(PROMPTS[k % len(PROMPTS)], seed=k)
        t1 = time.perf_counter()
        avatar = pipe.sample(latent, seed=k)
        t2 = time.perf_counter()
        avatar.views(count=8, resolution=64 if quick else 128)
        t3 = time.perf_counter()
        avatar.mesh(resolution=64 if quick else 128)
        t4 = time.perf_counter()
        if k == 0:
            continue
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            stages[key].append(value)
    figures = {key: round(statistics.median(values), 3) for key, values in stages.items()}
    figures["load_s"] = round(load_s, 2)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["avatars"] = repeats
    rows = [(key, f"{value}") for key, value in figures.items()]
    figures["upsampler"] = pipe.upsampler is not None
    figures["refiner"] = pipe.refiner is not None
    stages = ", ".join(f"{'with' if figures[s] else 'no'} {s}" for s in ("upsampler", "refiner"))
    return BenchResult(f"rodin generate --prompt, end to end ({stages})", rows, figures)
