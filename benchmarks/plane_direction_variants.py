"""Do cleaner plane directions keep more of what an edit does not name? Plane edits measured other ways than
the shipped difference of means, on the edit cases of `rodin eval semantic`, with the exact labels (no
routing), each added at twice its size (`plane_gain`) to the planes the base model starts from.

    .venv/bin/python benchmarks/plane_direction_variants.py MODEL --triplanes RUN --data DATA
        [--variant mean --variant joint:1 --variant mean:pca64 --variant subject] [--out F.json]

Variants:
- `mean`: the mean normalised planes of the training subjects with the value minus the mean of the others
  (what `rodin train edits --triplanes` stores);
- `joint:LAMBDA`: one ridge regression of the planes on every attribute's one-hot values at once, so that a
  value's coefficient is its change with the other attributes held fixed (the co-occurrences of 880
  subjects removed), minus the frequency-weighted coefficients of the attribute's other values;
- `mean:pcaK` / `joint:LAMBDA:pcaK`: the same, projected on the K leading principal components of the
  training planes (a denoising, if the difference of means were noise spread over every texel);
- `mean:shrinkC`: the difference of means with each texel shrunk by its own noise: scaled by
  max(0, 1 - (C x its standard error / |difference|)^2), so that texels where the two groups' planes vary more
  than they differ (silhouette edges, the fit's noise) add nothing;
- `mean:headspan`: the difference of means projected on what the linear mean-planes head can draw (the
  span of its weights' columns): the nearest change of the planes the base model is trained to start from;
- `...:zmove` (a modifier): z moves too, by the least-squares change whose linear-head planes are the
  direction (so the UNet reads a z that agrees with the planes it starts from);
- `subject`: a control: a random training subject's deviation from the mean, scaled to the `mean`
  direction's norm: a change of the same size that targets nothing.

Besides the judge's figures, each variant reports the stray opacity of the edited avatars' front views
(`rodin.eval.samples.stray_opacity`: fog away from the silhouette; 0 for a clean render) against the
unedited avatars'.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

ATTRIBUTES = ("hair_colour", "hair_style", "beard", "glasses", "hat", "clothing", "clothing_colour", "expression",
              "skin")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--triplanes", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--gain", type=float, default=2.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = args.variant or ["mean", "mean:shrink2", "joint:1", "mean:pca64", "subject"]

    from rodin.eval.semantic import _generate, edit_cases, judge_planes, kept_attributes, prompt_cases
    from rodin.fit.store import TriplaneStore
    from rodin.io import write_json
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.judge import dataset_subjects, load_judge
    from rodin.train.base import load_plane_sets
    from rodin.triplane.triplane import resize_planes

    began = time.time()
    pipe = RodinPipeline.from_pretrained(args.model)
    base = pipe.base
    judge = load_judge(args.model / "judge").eval()
    held = [(f, json.loads((f / "attributes.json").read_text())) for f, split in dataset_subjects(args.data)
            if split != "train"]
    chosen = held[:100]
    rng = random.Random(0)
    prompt_cases([attrs for _, attrs in held], 100, rng)       # the evaluation draws its prompts first
    cases = edit_cases([attrs for _, attrs in chosen], 100, rng)
    latents = torch.cat([pipe.encode_image(f / "portrait.png") for f, _ in chosen])

    store = TriplaneStore.open(args.triplanes / "triplanes")
    rows, _ = load_plane_sets(store)
    labels = [json.loads((args.data / store.ids[r] / "attributes.json").read_text()) for r in rows]
    with torch.no_grad():
        side = base.config.unet.resolution
        planes = torch.cat([base.normalise(resize_planes(store.get(rows[i:i + 64]).float(), side))
                            for i in range(0, len(rows), 64)])
    flat = planes.reshape(len(planes), -1).double()
    values = sorted({(name, lab[name]) for lab in labels for name in ATTRIBUTES if name in lab})
    onehot = torch.tensor([[float(lab.get(n) == v) for n, v in values] for lab in labels], dtype=torch.float64)
    wanted = sorted({(attr, value) for _, attr, value, _ in cases})
    components: list[torch.Tensor] = []

    def mean_difference(shrink: float = 0.0) -> dict:
        out = {}
        for attr, value in wanted:
            has = torch.tensor([lab.get(attr) == value for lab in labels])
            change = flat[has].mean(0) - flat[~has].mean(0)
            if shrink > 0:
                error = (flat[has].var(0) / int(has.sum()) + flat[~has].var(0) / int((~has).sum())).sqrt()
                change = change * (1 - (shrink * error / change.abs().clamp_min(1e-12)) ** 2).clamp_min(0)
            out[(attr, value)] = change
        return out

    def joint(lam: float) -> dict:
        x, y = onehot - onehot.mean(0), flat - flat.mean(0)
        coef = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
        out = {}
        for attr, value in wanted:
            j = values.index((attr, value))
            others = [k for k, (n, _) in enumerate(values) if n == attr and k != j]
            share = onehot[:, others].sum(0)
            out[(attr, value)] = coef[j] - ((share / share.sum())[:, None] * coef[others]).sum(0)
        return out

    def projected(dirs: dict, k: int) -> dict:
        if not components:
            _, _, v = torch.pca_lowrank((flat - flat.mean(0)).float(), q=min(256, len(flat) - 1), center=False,
                                        niter=3)
            components.append(v.double())
        basis = components[0][:, :k]
        return {key: basis @ (basis.T @ d) for key, d in dirs.items()}

    def random_subjects() -> dict:
        reference = mean_difference()
        g = torch.Generator().manual_seed(5)
        picks = torch.randint(0, len(flat), (len(wanted),), generator=g)
        centre = flat.mean(0)
        return {key: (flat[int(j)] - centre) / (flat[int(j)] - centre).norm() * reference[key].norm()
                for key, j in zip(wanted, picks)}

    noise_seed = 20_000
    before = torch.stack([latents[row] for row, *_ in cases])
    with torch.no_grad():
        head_before = base.mean_planes(before)
    unedited = _generate(pipe, before, seed=noise_seed, batch=16, steps=args.steps)
    judged_before = judge_planes(judge, pipe, unedited)
    stray_before = stray(pipe, unedited)
    results = {}
    for variant in variants:
        kind, *rest = variant.split(":")
        pca = [int(r[3:]) for r in rest if r.startswith("pca")]
        shrink = [float(r[6:]) for r in rest if r.startswith("shrink")]
        span = "headspan" in rest
        zmove = "zmove" in rest
        rest = [r for r in rest if not r.startswith(("pca", "shrink", "headspan", "zmove"))]
        if kind == "mean":
            dirs = mean_difference(shrink[0] if shrink else 0.0)
        elif kind == "joint":
            dirs = joint(float(rest[0]) if rest else 1.0)
        elif kind == "subject":
            dirs = random_subjects()
        else:
            raise SystemExit(f"unknown variant {variant!r}")
        if pca:
            dirs = projected(dirs, pca[0])
        if span:
            if base.mean_planes.kind != "linear":
                raise SystemExit("headspan needs a linear mean-planes head")
            basis, _ = torch.linalg.qr(base.mean_planes.linear.weight.detach().double())
            dirs = {key: basis @ (basis.T @ d) for key, d in dirs.items()}
        delta = torch.stack([args.gain * dirs[(attr, value)].float().reshape(planes.shape[1:])
                             for _, attr, value, _ in cases])
        moved = before
        if zmove:
            weight = base.mean_planes.linear.weight.detach().double()
            change = torch.linalg.lstsq(weight, delta.flatten(1).double().T).solution.T.float()
            moved = before + change
        edited = _generate(pipe, moved, seed=noise_seed, batch=16, steps=args.steps, means=head_before + delta)
        judged = judge_planes(judge, pipe, edited)
        success, kept = [], []
        for (_, attr, value, _), was, now in zip(cases, judged_before, judged):
            success.append(now[attr] == value)
            kept.extend(now[n] == was[n] for n in kept_attributes(attr))
        key = variant.replace(":", "_").replace(".", "_")     # a JSON key BENCHMARKS.md can name
        results[key] = {"edit_success": round(float(np.mean(success)), 3),
                            "edit_preservation": round(float(np.mean(kept)), 3),
                            "stray_opacity": round(stray(pipe, edited), 4),
                            "direction_norm": round(float(np.mean([float(d.norm()) for d in dirs.values()])), 1)}
        print(f"{variant:>16}: {results[key]}  ({time.time() - began:.0f} s)", flush=True)
    figures = {"model": str(args.model), "triplanes": str(args.triplanes), "train_subjects": len(flat),
               "edits": len(cases), "stray_opacity_unedited": round(stray_before, 4),
               "gain": args.gain, "steps": args.steps, "results": results}
    if args.out:
        write_json(args.out, figures)
    print(json.dumps(figures))


@torch.no_grad()
def stray(pipe, planes: torch.Tensor, *, resolution: int = 64) -> float:
    """Mean stray opacity of the front views of tri-planes (B, 3, C, H, W)."""
    from rodin.eval.samples import stray_opacity
    from rodin.render.cameras import DEFAULT_FOV_X, orbit_cameras
    from rodin.render.volume import render_views

    c2w = orbit_cameras([0.0], [10.0])
    values = []
    for one in planes:
        _, _, opacity = render_views(one.float()[None], pipe.decoder, c2w, DEFAULT_FOV_X, resolution,
                                     samples=pipe.render.samples, importance=pipe.render.importance)
        values.append(stray_opacity(opacity[0]))
    return float(np.mean(values))


if __name__ == "__main__":
    main()
