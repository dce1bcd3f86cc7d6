"""Can a prompt say more of the planes than the z the prior draws for it? A ridge regression from a
caption's text embedding straight to the base model's normalised planes, against the mean-planes head
reading the prior's z, each judged on the prompts of `rodin eval semantic`.

    .venv/bin/python benchmarks/text_planes.py MODEL --triplanes RUN --data DATA [--steps 10] [--out F.json]

RUN is the fit MODEL's base was trained on; the regressions are fitted on its training subjects, each
subject once per caption wording: 8 whole captions, and 8 naming only 1-3 of its attributes (as prompts
do; `rodin.data.avatar.caption(mentions=)`). A ridge regression is a conditional mean, so a partial caption
asks for the average of the subjects it fits ("red hair": the mean of the red-haired ones).

Routes, each read by the judge on the named attributes of the 100 prompts (the evaluation's cases, seed 0):
- `head_of_prior_z`: the base model's mean-planes head applied to the z the prior draws (what the UNet
  starts from in `rodin generate --prompt` today), no diffusion;
- `ridge_FEATURES_ROWS`: the ridge regression's planes, no diffusion, FEATURES the shared space's text
  embedding (64-d) or the frozen sentence backbone's vector (384-d), ROWS the wordings fitted on;
- `sampled_prior_z`: the whole base model sampled from the prior's z, as `rodin eval semantic` does
  (its text_attr_acc, up to the noise of the sampler);
- `sampled_prior_z_ridge_mean`: the same sampling with the head's planes replaced by the best ridge route's.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from rodin.diffusion.mean_planes import RidgeSums
from rodin.diffusion.unet import unit_rms
from rodin.eval.semantic import judge_planes, prompt_cases, sample_batch
from rodin.fit.store import TriplaneStore
from rodin.io import write_json
from rodin.pipeline import RodinPipeline
from rodin.semantic.judge import dataset_subjects, load_judge
from rodin.semantic.portraits import load_portrait_set
from rodin.semantic.text import shared_embedder
from rodin.train.base import load_plane_sets
from rodin.train.encoder import sentence_vectors
from rodin.triplane.triplane import resize_planes


class GivenMean(torch.nn.Module):
    """Stands in for the mean-planes head: returns the roll-outs set on it, whatever z it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: torch.Tensor | None = None

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        assert self.rows is not None and len(self.rows) == len(latent)
        return self.rows


def ridge(features: torch.Tensor, planes: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, float]:
    sums = RidgeSums(mean)
    for start in range(0, len(features), 512):
        sums.add(features[start:start + 512], planes[start:start + 512])
    return sums.solve(penalties=(0.3, 1.0, 3.0, 10.0, 30.0, 100.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--triplanes", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--judge", type=Path, default=None, help="default: MODEL/judge")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("runs/text_planes_captions.safetensors"))
    parser.add_argument("--whole", type=int, default=8, help="whole-caption wordings per subject")
    parser.add_argument("--partial", type=int, default=8, help="wordings naming 1-3 attributes per subject")
    parser.add_argument("--no-sampling", action="store_true", help="only the regressions' own planes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    began = time.time()
    whole, partial = args.whole, args.partial

    torch.manual_seed(0)
    pipe = RodinPipeline.from_pretrained(args.model)
    base = pipe.base.float()
    judge = load_judge(args.judge or args.model / "judge").eval()
    encoder = pipe.semantic

    # Training planes, and the text of every wording of every training subject.
    store = TriplaneStore.open(args.triplanes / "triplanes")
    train_rows, _ = load_plane_sets(store)
    texts = load_portrait_set(args.data, split="train", size=64, front_degrees=0.0, captions_per_subject=whole,
                              partial_captions=partial)
    where = {sid: k for k, sid in enumerate(texts.ids)}
    train_rows = [r for r in train_rows if store.ids[r] in where]
    words = [texts.captions[where[store.ids[r]]] for r in train_rows]
    flat = [w for wordings in words for w in wordings]
    backbone = sentence_vectors(flat, args.cache, print).float()
    shared = encoder.project_sentences(backbone).cpu().float()
    with torch.no_grad():
        planes = torch.cat([base.normalise(resize_planes(store.get(train_rows[i:i + 64]).float(),
                                                         base.config.unet.resolution))
                            for i in range(0, len(train_rows), 64)])
    mean = planes.mean(0)
    per = whole + partial
    subject_of = torch.arange(len(train_rows)).repeat_interleave(per)
    wording = torch.arange(per).repeat(len(train_rows))
    row_sets = {"whole": wording < whole, "partial": wording >= whole, "both": torch.ones_like(wording, dtype=bool)}
    row_sets = {k: v for k, v in row_sets.items() if v.any()}

    # The evaluation's prompts.
    held = [json.loads((f / "attributes.json").read_text()) for f, split in dataset_subjects(args.data)
            if split != "train"]
    cases = [(named, prompt) for _, named, prompt in prompt_cases(held, args.prompts, random.Random(args.seed))]
    prompts = [p for _, p in cases]
    prompt_backbone = shared_embedder()(prompts).float()
    prompt_shared = encoder.project_sentences(prompt_backbone).cpu().float()
    g = torch.Generator().manual_seed(args.seed + 1)
    prior_z = torch.cat([pipe.prior.sample(prompt_shared[k:k + 16], generator=g) for k in range(0, len(prompts), 16)])

    def read(rolled: torch.Tensor) -> dict:
        judged = judge_planes(judge, pipe, base.denormalise(rolled))
        right: dict[str, list[bool]] = {}
        for (named, _), j in zip(cases, judged):
            for name, value in named.items():
                right.setdefault(name, []).append(j[name] == value)
        total = [v for vs in right.values() for v in vs]
        return {"accuracy": round(sum(total) / len(total), 4), "mentions": len(total),
                "per_attribute": {n: round(sum(v) / len(v), 3) for n, v in right.items()}}

    results: dict[str, dict] = {}

    def record(name: str, figures: dict) -> None:
        results[name] = figures
        print(f"{name:>32}: {figures['accuracy']:.3f}  {figures['per_attribute']}  "
              f"({time.time() - began:.0f} s)", flush=True)

    with torch.no_grad():
        record("head_of_prior_z", read(base.mean_planes(prior_z)))
    best, best_planes = None, None
    for features_name, train_x, prompt_x in (("shared", shared, prompt_shared),
                                             ("backbone", backbone, prompt_backbone)):
        for rows_name, chosen in row_sets.items():
            x = unit_rms(train_x[chosen])
            y = planes[subject_of[chosen]]
            weights, penalty = ridge(x, y, mean)
            made = (unit_rms(prompt_x).double() @ weights + mean.flatten().double()).float().reshape(
                len(prompts), *mean.shape)
            name = f"ridge_{features_name}_{rows_name}"
            record(name, {**read(made), "penalty": penalty})
            if best is None or results[name]["accuracy"] > results[best]["accuracy"]:
                best, best_planes = name, made

    def sampled(means: torch.Tensor | None) -> torch.Tensor:
        head = base.mean_planes
        stand_in = GivenMean()
        out = []
        try:
            if means is not None:
                base.mean_planes = stand_in
            for start in range(0, len(prior_z), 16):
                chunk = prior_z[start:start + 16]
                if means is not None:
                    stand_in.rows = means[start:start + 16]
                seeds = range(args.seed + 10_000 + start, args.seed + 10_000 + start + len(chunk))
                out.append(sample_batch(pipe, chunk, seeds, steps=args.steps, guidance_scale=1.0))
        finally:
            base.mean_planes = head
        return base.normalise(torch.cat(out))

    if not args.no_sampling:
        record("sampled_prior_z", read(sampled(None)))
        record("sampled_prior_z_ridge_mean", {**read(sampled(best_planes)), "ridge": best})
    figures = {"model": str(args.model), "triplanes": str(args.triplanes), "data": str(args.data),
               "prompts": len(prompts), "train_subjects": len(train_rows), "steps": args.steps,
               "wordings": {"whole": whole, "partial": partial}, "results": results,
               "wall_s": round(time.time() - began, 1)}
    if args.out:
        write_json(args.out, figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
