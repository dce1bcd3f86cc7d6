"""Where a base model loses a subject's attributes: one judge reads, for the same subjects,

- renders of their fitted planes, plain, with Gaussian noise added in the model's normalised units (is
  the decoder fragile?) and low-passed (where do the attributes live?);
- renders of the model's one-step estimate of the clean planes (x0) from the noisy planes at a few noise
  levels, z given, with and without guidance (at t = T the input is pure noise: what z alone brings);
- renders of the mean-planes head's regression from z, when the model has one;
- renders of full DDIM samples;
and the error of those estimates in render space (MSE of patches against the subjects' views).

    .venv/bin/python benchmarks/probe_base.py MODEL --triplanes RUN --data DATA [--subjects 40] [--heldout]
        [--out F.json]

The subjects are the first fitted rows of RUN (training subjects of MODEL when it was trained on RUN), or
with --heldout the first of those RUN keeps out of training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rodin.diffusion.base import predicted_clean
from rodin.eval.semantic import planes_attribute_accuracy, sample_batch
from rodin.fit.store import TriplaneStore
from rodin.io import write_json
from rodin.pipeline import RodinPipeline
from rodin.semantic.judge import load_judge
from rodin.triplane.triplane import resize_planes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--triplanes", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--judge", type=Path, default=Path("models/small-1k/judge"))
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--heldout", action="store_true", help="read RUN's held-out (val/test) subjects only")
    parser.add_argument("--noise-levels", default="999,700")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    pipe = RodinPipeline.from_pretrained(args.model)
    base = pipe.base
    judge = load_judge(args.judge)
    store = TriplaneStore.open(args.triplanes / "triplanes")
    rows = [i for i, done in enumerate(store.done) if done and not (args.heldout and store.splits[i] == "train")]
    rows = rows[:args.subjects]
    ids = [store.ids[i] for i in rows]
    truth = [json.loads((args.data / s / "attributes.json").read_text()) for s in ids]
    n = len(rows)

    def read(planes: torch.Tensor) -> float:
        return planes_attribute_accuracy(judge, pipe.decoder, pipe.render, planes, truth)

    figures: dict = {"model": args.model, "triplanes": str(args.triplanes), "subjects": n, "heldout": args.heldout}
    side = base.config.unet.resolution
    planes = resize_planes(store.get(rows).float(), side)
    clean = base.normalise(planes)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    figures["fitted"] = read(planes)
    for sigma in (0.2, 0.4):
        figures[f"fitted_noise_{sigma:g}".replace(".", "_")] = read(base.denormalise(clean + sigma * noise))
    for low in (side // 2, side // 4):
        figures[f"fitted_lowpass_{low}"] = read(resize_planes(resize_planes(planes, low), side))
    print(json.dumps(figures), flush=True)

    latents = torch.cat([pipe.encode_image(args.data / s / "portrait.png") for s in ids])
    with torch.no_grad():
        if base.mean_planes is not None:     # what the regression from z alone draws
            figures["mean_planes"] = read(base.denormalise(base.mean_planes(latents)))
        for t in (int(x) for x in args.noise_levels.split(",")):
            steps = torch.full((n,), t)
            noisy = base.noise.add_noise(clean, noise, steps)
            cond = base(noisy, steps, latents)
            uncond = base(noisy, steps, torch.zeros_like(latents))
            for scale in (1.0, 3.0):
                out = uncond + scale * (cond - uncond)
                made = base.denormalise(predicted_clean(base.noise, noisy, out, steps))
                figures[f"x0_t{t}_guidance{scale:g}"] = read(made)
            print(json.dumps(figures), flush=True)
    for steps in (10,):
        figures[f"ddim{steps}_guidance2"] = read(sample_batch(pipe, latents, range(n), steps=steps,
                                                             guidance_scale=2.0))
    print(json.dumps(figures))
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
