"""How close fitting a portrait's avatar to its portrait brings it to the subject, and what it costs.

    .venv/bin/python benchmarks/portrait_fit.py MODEL --data DATA [--offset 100] [--subjects 20]
        [--variant NAME:key=value,key=value ...] [--views 8] [--steps 10] --out JSON

Held-out subjects of DATA from `--offset` on: `rodin eval semantic` takes its portrait cases from the first
100, so the default offset keeps these apart from them (the shipped settings were chosen on these). Each
subject's avatar is drawn from its portrait's z as the evaluation draws it (base planes, the noise of seed + k),
then fitted to the portrait with the model's `portrait_fit` settings, changed as each variant says
(`drawn:steps=0` is the avatar as drawn). Per variant:

- `attr_acc`: the attributes the judge reads in the avatar that the subject has (as `portrait_attr_acc`);
- `psnr_front` / `psnr_side` / `psnr_back`: renders at `--views` of the subject's own cameras against its true
  views, split by azimuth from the face (within 45 degrees, 45 to 135, beyond 135): the likeness beyond what
  the judge names, and how much the fit disturbs what the portrait cannot see;
- `seconds_per_subject`: fitting alone.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

DEFAULT_VARIANTS = ["drawn:steps=0", "shipped:", "no_keep:keep_weight=0", "no_density:density_weight=0",
                    "steps30:steps=30", "steps120:steps=120"]


def parse_variant(text: str) -> tuple[str, dict]:
    from rodin.config import parse_settings

    name, _, settings = text.partition(":")
    return name, parse_settings([s for s in settings.split(",") if s])


def view_psnr(planes, pipe, views, indices) -> dict[str, float]:
    """PSNR of the avatar's renders at the subject's cameras `indices`, grouped by azimuth from the face."""
    from rodin.render.volume import occupancy_from_density, render_views

    r = pipe.render
    occupancy = occupancy_from_density(planes[None], pipe.decoder, resolution=r.occupancy_resolution,
                                       threshold=r.occupancy_threshold)
    truth = views.composite(r.background)
    groups: dict[str, list[float]] = {"front": [], "side": [], "back": []}
    for i in indices:
        c2w = views.c2w[i]
        side = truth.shape[1]
        rgb, _, _ = render_views(planes, pipe.decoder, c2w[None], views.fov_x, side, samples=r.samples,
                                 importance=r.importance, occupancy=occupancy, background=r.background)
        mse = float((rgb[0] - truth[i]).pow(2).mean())
        azimuth = abs(math.degrees(math.atan2(float(c2w[0, 3]), float(c2w[2, 3]))))
        group = "front" if azimuth <= 45 else "side" if azimuth <= 135 else "back"
        groups[group].append(-10 * math.log10(max(mse, 1e-10)))
    return {k: float(np.mean(v)) for k, v in groups.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--offset", type=int, default=100)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--variant", action="append", default=None)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from rodin.data.nerf import load_subject
    from rodin.eval.semantic import JUDGED, _accuracy, _generate, _judged, judge_planes
    from rodin.fit.portrait import fit_to_portrait
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.judge import dataset_subjects, load_judge

    pipe = RodinPipeline.from_pretrained(args.model)
    judge = load_judge(args.model / "judge").eval()
    held = [f for f, split in dataset_subjects(args.data) if split != "train"][args.offset:args.offset + args.subjects]
    if not held:
        raise SystemExit(f"{args.data}: no held-out subjects from {args.offset} on")
    truth = [json.loads((f / "attributes.json").read_text()) for f in held]
    latents = torch.cat([pipe.encode_image(f / "portrait.png") for f in held])
    drawn = _generate(pipe, latents, seed=args.seed, batch=16, steps=args.steps)
    subjects = [load_subject(f) for f in held]
    indices = [list(range(0, len(v), max(1, len(v) // args.views)))[:args.views] for v in subjects]

    results = {}
    for name, settings in map(parse_variant, args.variant or DEFAULT_VARIANTS):
        config = replace(pipe.portrait_fit, **settings)
        started = time.time()
        planes = torch.stack([
            fit_to_portrait(p, pipe.decoder, pipe.portrait_pixels(f / "portrait.png", size=config.resolution),
                            config=config, render=pipe.render, generator=torch.Generator().manual_seed(args.seed + k))
            for k, (p, f) in enumerate(zip(drawn, held))])
        seconds = (time.time() - started) / len(held)
        judged = judge_planes(judge, pipe, planes)
        acc, per = _accuracy([(n, t[n], j[n]) for t, j in zip(truth, judged) for n in JUDGED if _judged(t, n)])
        psnr = [view_psnr(p, pipe, v, i) for p, v, i in zip(planes, subjects, indices)]
        by_group = {f"psnr_{g}": float(np.mean([x[g] for x in psnr if g in x])) for g in ("front", "side", "back")}
        results[name] = {"settings": settings, "attr_acc": acc, "per_attribute": per,
                         "seconds_per_subject": seconds, **by_group}
        r = results[name]
        print(f"{name:12s} attrs {acc:.3f}  PSNR front {r['psnr_front']:.2f} side {r['psnr_side']:.2f} "
              f"back {r['psnr_back']:.2f} dB  {seconds:.1f} s/subject", flush=True)
    record = {"model": str(args.model), "data": str(args.data), "subjects": len(held), "offset": args.offset,
              "views_per_subject": args.views, "sample_steps": args.steps, "shipped": asdict(pipe.portrait_fit),
              "variants": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: {m: v[m] for m in ("attr_acc", "psnr_front", "psnr_side", "psnr_back")}
                      for k, v in results.items()}))


if __name__ == "__main__":
    main()
