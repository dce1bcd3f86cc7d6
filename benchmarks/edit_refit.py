"""Where a portrait's edited avatar is refitted from: the edited drawn avatar, or the fitted one plus the edit.

    .venv/bin/python benchmarks/edit_refit.py MODEL --data DATA [--out F.json]

`pipe.edit` on a portrait's fitted avatar draws the edited avatar again and refits it to the fitted avatar's
portrait view outside what the edit changes (`pipe.refit_edit`). The refit only sees the portrait camera, so
the sides the judge also reads (30 degrees either way) are those of the edited *drawn* avatar, which differs
from the fitted one in everything the portrait fit changed. The `carried` variant refits instead from the
fitted avatar plus the edit's change of the drawn planes (edited drawn - drawn), so that the sides keep the
fit. Runs the 100 edit cases of `rodin eval semantic` (same cases, noise and fits) both ways.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from rodin.eval.semantic import _generate, edit_cases, judge_planes, kept_attributes, prompt_cases
    from rodin.fit.portrait import edited_portrait, fit_to_portrait
    from rodin.io import write_json
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.judge import dataset_subjects, load_judge

    pipe = RodinPipeline.from_pretrained(args.model)
    judge = load_judge(args.model / "judge").eval()
    held = [(f, json.loads((f / "attributes.json").read_text())) for f, split in dataset_subjects(args.data)
            if split != "train"]
    chosen = held[:100]
    truth = [attrs for _, attrs in chosen]
    rng = random.Random(0)                    # as `evaluate_semantic` draws its cases: prompts first, then edits
    prompt_cases([attrs for _, attrs in held], 100, rng)
    cases = edit_cases(truth, args.cases, rng)
    latents = torch.cat([pipe.encode_image(f / "portrait.png") for f, _ in chosen])
    noise_seed = 20_000
    rows = [row for row, *_ in cases]
    started = time.perf_counter()
    drawn = _generate(pipe, torch.stack([latents[r] for r in rows]), seed=noise_seed, batch=16, steps=args.steps)
    fitted = torch.stack([pipe.fit_portrait(p, chosen[r][0] / "portrait.png", seed=noise_seed + k)
                          for k, (p, r) in enumerate(zip(drawn, rows))])
    judged_before = judge_planes(judge, pipe, fitted)
    changes = [pipe.edit_planes(text, strength=1.0) for *_, text in cases]
    with torch.no_grad():
        means = pipe.base.mean_planes(torch.stack([latents[r] for r in rows])) + torch.cat(changes)
    edited = _generate(pipe, torch.stack([latents[r] for r in rows]), seed=noise_seed, batch=16, steps=args.steps,
                       means=means)
    print(f"drawn, fitted and edited in {time.perf_counter() - started:.0f} s", flush=True)
    config = pipe.portrait_fit
    figures: dict = {"model": str(args.model), "cases": len(cases)}
    for variant in ("shipped", "carried"):
        started = time.perf_counter()
        after = []
        for k, (f, d, e) in enumerate(zip(fitted, drawn, edited)):
            target = edited_portrait(f, d, e, pipe.decoder, config=config, render=pipe.render)
            start = e if variant == "shipped" else f + (e - d)
            after.append(fit_to_portrait(start, pipe.decoder, target, config=config, render=pipe.render,
                                         generator=torch.Generator().manual_seed(noise_seed + k + 1)))
        judged_after = judge_planes(judge, pipe, torch.stack(after))
        success, kept = [], []
        for (_, name, value, _), was, now in zip(cases, judged_before, judged_after):
            success.append(now[name] == value)
            others = kept_attributes(name)
            kept.extend(now[n] == was[n] for n in others)
        figures[variant] = {"edit_success": float(np.mean(success)), "edit_preservation": float(np.mean(kept)),
                            "seconds": round(time.perf_counter() - started, 1)}
        print(variant, figures[variant], flush=True)
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
