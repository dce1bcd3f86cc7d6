"""Edits through the text head: does moving the planes the UNet starts from by what the text head says
an edit changes do better than moving z alone?

    .venv/bin/python benchmarks/edit_planes.py MODEL --data DATA [--steps 10] [--strength 1] [--out F.json]

MODEL's base needs a text head (`rodin train text-head`). The cases are those of `rodin eval semantic`
(seed 0: the same 100 held-out portraits' edits), and so is the measure (`edit_success`: the judge reads
the asked value; `edit_preservation`: it reads the other attributes as on the unedited avatar from the same
noise). An edit text becomes two captions (`rodin.semantic.edit.edit_texts`: "a person" and "a person
with red hair"), whose text-head planes differ by delta. Variants, each sampled from the same noise:

- `z`: z moved along the edit's direction, the mean-planes head's planes of it (what ships);
- `z_and_delta`: the same z, the head's planes of the unedited z plus strength x delta;
- `delta`: z unedited, its head's planes plus strength x delta;
- `z_plus_delta`: the moved z, its head's planes plus strength x delta (both moves);

with --triplanes RUN (the fit the base was trained on), deltas measured on its training subjects instead
of read from the text head: the mean normalised planes of the subjects that have the asked value minus
the mean of those that do not (as `rodin train edits` measures z directions on labelled portraits):

- `labelled`: z unedited, its head's planes plus strength x that delta;
- `z_plus_labelled`: the moved z, its head's planes plus strength x that delta;
- `labelled_after`: no new sampling: the unedited avatar's planes plus strength x that delta;
- `labelled_resample`: the unedited avatar's planes plus strength x that delta, noised back to half the
  schedule and denoised with the edited head planes (SDEdit), from the same noise.

With --routed, the deltas are not measured here but taken as the product picks them from the edit's text:
`pipe.edit_planes(text, strength)` (MODEL/edits' plane directions, already times `plane_gain`).

With --steer T1,T2 (a model whose prompt reader holds value planes: `rodin train steering`), for each
target T, `steerT` ("steer1_5" for 1.5): z unedited, its head's planes steered as a prompt's are
(`PromptReader.steer` with the reader's reading of the edit text, at target T): each avatar moves along the
asked value's direction only as far as it lacks it, instead of by the same fixed amount.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from rodin.eval.semantic import _generate, edit_cases, judge_planes, kept_attributes, prompt_cases
from rodin.io import write_json
from rodin.pipeline import RodinPipeline
from rodin.semantic.edit import edit_texts
from rodin.semantic.judge import dataset_subjects, load_judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--triplanes", type=Path, help="the base's fit run, for the labelled deltas")
    parser.add_argument("--routed", action="store_true", help="deltas as the product routes the edit texts")
    parser.add_argument("--steer", default="", help="targets of steered edits, comma-separated (e.g. 1.5,2)")
    parser.add_argument("--only", default="", help="variants to run, comma-separated (default: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    began = time.time()

    pipe = RodinPipeline.from_pretrained(args.model)
    base = pipe.base
    if base.text_planes is None:
        raise SystemExit(f"{args.model}: its base has no text head (rodin train text-head)")
    judge = load_judge(args.model / "judge").eval()
    held = [(f, json.loads((f / "attributes.json").read_text())) for f, split in dataset_subjects(args.data)
            if split != "train"]
    chosen = held[:args.subjects]
    truth = [attrs for _, attrs in chosen]
    rng = random.Random(0)
    prompt_cases([attrs for _, attrs in held], 100, rng)       # the evaluation draws its prompts first
    cases = edit_cases(truth, args.edits, rng)
    latents = torch.cat([pipe.encode_image(f / "portrait.png") for f, _ in chosen])
    noise_seed = 20_000

    def sample(z: torch.Tensor, means: torch.Tensor | None = None) -> torch.Tensor:
        return _generate(pipe, z, seed=noise_seed, batch=16, steps=args.steps, means=means)

    def generate(z: torch.Tensor, means: torch.Tensor | None = None) -> list[dict]:
        return judge_planes(judge, pipe, sample(z, means))

    before = torch.stack([latents[row] for row, *_ in cases])
    planes_before = sample(before)
    judged_before = judge_planes(judge, pipe, planes_before)
    moved = torch.cat([pipe.edit_latent(latents[row:row + 1], text, strength=args.strength)
                       for row, _, _, text in cases])
    with torch.no_grad():
        pairs = [edit_texts(text) for *_, text in cases]
        source = base.prompt_mean(pipe.semantic.encode_texts([s for s, _ in pairs]).cpu())
        target = base.prompt_mean(pipe.semantic.encode_texts([t for _, t in pairs]).cpu())
        delta = args.strength * (target - source)
        head_before, head_moved = base.mean_planes(before), base.mean_planes(moved)
    variants = {"z": (moved, None), "z_and_delta": (moved, head_before + delta), "delta": (before, head_before + delta),
                "z_plus_delta": (moved, head_moved + delta)}
    labelled = None
    if args.routed:
        labelled = torch.cat([pipe.edit_planes(text, strength=args.strength) for *_, text in cases])
    elif args.triplanes:
        from rodin.fit.store import TriplaneStore
        from rodin.train.base import load_plane_sets
        from rodin.triplane.triplane import resize_planes

        store = TriplaneStore.open(args.triplanes / "triplanes")
        rows, _ = load_plane_sets(store)
        labels = [json.loads((args.data / store.ids[r] / "attributes.json").read_text()) for r in rows]
        with torch.no_grad():
            planes = torch.cat([base.normalise(resize_planes(store.get(rows[i:i + 64]).float(),
                                                             base.config.unet.resolution))
                                for i in range(0, len(rows), 64)])
        wanted = {(attr, value) for _, attr, value, _ in cases}
        measured = {}
        for attr, value in wanted:
            has = torch.tensor([lab.get(attr) == value for lab in labels])
            measured[(attr, value)] = planes[has].mean(0) - planes[~has].mean(0)
        labelled = args.strength * torch.stack([measured[(attr, value)] for _, attr, value, _ in cases])
    if labelled is not None:
        variants["labelled"] = (before, head_before + labelled)
        variants["z_plus_labelled"] = (moved, head_moved + labelled)
    if labelled is not None:
        with torch.no_grad():
            after = planes_before + base.denormalise(labelled) - base.denormalise(torch.zeros_like(labelled))
        variants["labelled_after"] = (None, after)
        variants["labelled_resample"] = (before, ("resample", planes_before, head_before + labelled))
    if args.steer:
        from dataclasses import replace

        reader = pipe.reader
        if reader is None or reader.value_planes is None:
            raise SystemExit(f"{args.model}: --steer needs a prompt reader with value planes (rodin train steering)")
        said, kept_config = reader.config.said, reader.config
        readings = [reader.read(text).named(said) for *_, text in cases]
        for target in args.steer.split(","):
            reader.config = replace(kept_config, steer=float(target))
            name = "steer" + target.strip().replace(".", "_")      # a key BENCHMARKS' template can name
            variants[name] = (before, reader.steer(head_before, readings, base.normalise))
        reader.config = kept_config
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    results = {}
    for name, (z, means) in variants.items():
        if z is None:
            judged = judge_planes(judge, pipe, means)
        elif isinstance(means, tuple):
            judged = judge_planes(judge, pipe, _resampled(pipe, z, means[1], means[2], labelled, seed=noise_seed,
                                                          steps=args.steps))
        else:
            judged = generate(z, means)
        success, kept = [], []
        for (_, attr, value, _), was, now in zip(cases, judged_before, judged):
            success.append(now[attr] == value)
            kept.extend(now[n] == was[n] for n in kept_attributes(attr))
        results[name] = {"edit_success": round(float(np.mean(success)), 3),
                         "edit_preservation": round(float(np.mean(kept)), 3)}
        print(f"{name:>14}: {results[name]}  ({time.time() - began:.0f} s)", flush=True)
    figures = {"model": str(args.model), "data": str(args.data), "edits": len(cases), "strength": args.strength,
               "steps": args.steps, "results": results}
    if args.out:
        write_json(args.out, figures)
    print(json.dumps(figures))


@torch.no_grad()
def _resampled(pipe, z: torch.Tensor, planes: torch.Tensor, means: torch.Tensor, delta: torch.Tensor, *, seed: int,
               steps: int, start: float = 0.5) -> torch.Tensor:
    """SDEdit: the unedited planes moved by delta (normalised units), noised to `start` of the schedule with
    each row's own noise, then denoised in `steps` * `start` DDIM steps with the edited head planes."""
    from rodin.diffusion.base import sampling_scheduler

    base = pipe.base
    x0 = base.normalise(planes) + delta
    generators = [torch.Generator().manual_seed(seed + 7_000 + k) for k in range(len(z))]
    noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in generators])
    scheduler = sampling_scheduler(base.config.diffusion)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps[int(len(scheduler.timesteps) * (1 - start)):]
    x = scheduler.add_noise(x0, noise, timesteps[:1].repeat(len(z)))
    for t in timesteps:
        out = base(x, t.repeat(len(z)), z, mean=means)
        x = scheduler.step(out, t, x).prev_sample
    return base.denormalise(x)


if __name__ == "__main__":
    main()
