"""Prompts read as attributes: how well the reader reads, and what the avatars drawn from its bank show.

    .venv/bin/python benchmarks/prompt_reader.py MODEL --data DATA [--out F.json] [--variants ...]

MODEL must have a prompt reader (`rodin train reader`). The 100 text cases of `rodin eval semantic` (same
seed, same paraphrases, same noise; read by MODEL/judge) are drawn several ways:

- `oracle`: z from 4 bank portraits that have the attributes each prompt names, taken from the case itself
  (a perfect reader; the ceiling of drawing z from the bank);
- `reader`: z from the reader's draw (what the pipeline does with a reader);
- `blend`: the reader's z, the base model starting from the mean of its mean-planes head's planes and the
  text head's;
- `prior`: the latent prior's z and the text head's planes (what the pipeline does without a reader);
- `oraclesteerK`: `oracle`'s z, then its blend of planes steered as `steerK` toward the values the prompt
  truly names (a perfect reader, steered);
- `steerK` (K a number, e.g. `steer1`): `blend`, then for each attribute the reader reads as named, the
  starting planes moved along that value's labelled plane direction d (the mean normalised planes of the
  fit run's training subjects with the value, minus the mean of those without) until their projection
  on d reaches K typical differences (nothing moves when it already does); needs `--triplanes`.

Each variant also reports the stray opacity of its avatars' front views (fog away from the silhouette,
`benchmarks/plane_direction_variants.py`). Reading accuracy (the named attributes read with the right
value, and attributes read that the prompt does not name) is reported on these 100 prompts and on 200
more from another seed, clause by clause (the reader's default) and whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

import torch
from plane_direction_variants import stray


@torch.no_grad()
def value_means(pipe, run: Path, data: Path) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
    """{(attribute, value): (mean normalised roll-out of the fit run's training subjects with the value,
    mean of those without)}, for values with at least 5 subjects on each side."""
    from rodin.fit.store import TriplaneStore
    from rodin.semantic.judge import JUDGED
    from rodin.train.base import load_plane_sets
    from rodin.triplane.triplane import resize_planes

    store = TriplaneStore.open(run / "triplanes")
    rows, _ = load_plane_sets(store)
    total, sums, counts = 0.0, {}, {}
    for start in range(0, len(rows), 64):
        part = rows[start:start + 64]
        rolled = pipe.base.normalise(resize_planes(store.get(part).float(), pipe.base.config.unet.resolution))
        labels = [json.loads((data / store.ids[i] / "attributes.json").read_text()) for i in part]
        total = total + rolled.double().sum(0)
        for name, values in JUDGED.items():
            for value in values:
                has = torch.tensor([attrs.get(name) == value for attrs in labels])
                if has.any():
                    sums[(name, value)] = sums.get((name, value), 0.0) + rolled[has].double().sum(0)
                    counts[(name, value)] = counts.get((name, value), 0) + int(has.sum())
    out = {}
    for key, n in counts.items():
        if 5 <= n <= len(rows) - 5:
            out[key] = ((sums[key] / n).float(), ((total - sums[key]) / (len(rows) - n)).float())
    return out


def steered(means: torch.Tensor, readings: list[dict], directions: dict, target: float) -> torch.Tensor:
    """Each row of `means` (B, C, H, 3W) moved, per attribute read as named, along its value's direction
    until its projection there reaches `target` (0: the typical subject without the value, 1: with it)."""
    out = means.clone()
    for row, named in enumerate(readings):
        for name, (value, _) in named.items():
            if (name, value) not in directions:
                continue
            with_value, without = directions[(name, value)]
            d = with_value - without
            t = float(((out[row] - without) * d).sum() / (d * d).sum())
            out[row] += max(0.0, target - t) * d
    return out


def reading_scores(reader, cases: list[tuple[dict, str]]) -> dict:
    right = total = extra = 0
    for named, prompt in cases:
        got = reader.read(prompt).named(reader.config.said)
        total += len(named)
        right += sum(got.get(k, ("",))[0] == v for k, v in named.items())
        extra += len(set(got) - set(named))
    return {"named_read_right": right / total, "named": total, "extra_attributes_per_prompt": extra / len(cases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--variants", nargs="*", default=["oracle", "reader", "blend", "prior"])
    parser.add_argument("--cases-seed", type=int, default=0, help="draw the prompts from this seed instead of the "
                        "evaluation's (0); e.g. 1 to choose settings on prompts the evaluation does not use")
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--triplanes", type=Path, help="the fit run the base model was trained on (steer variants)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from rodin.eval.semantic import _accuracy, _generate, judge_planes, prompt_cases
    from rodin.io import write_json
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.judge import dataset_subjects, load_judge

    pipe = RodinPipeline.from_pretrained(args.model)
    reader = pipe.reader
    if reader is None:
        raise SystemExit(f"{args.model}: no prompt reader (rodin train reader)")
    judge = load_judge(args.model / "judge").eval()
    held = [json.loads((f / "attributes.json").read_text()) for f, split in dataset_subjects(args.data)
            if split != "train"]
    # As `evaluate_semantic` draws them: its rng is fresh when the prompt cases are drawn.
    cases = [(named, prompt) for _, named, prompt in prompt_cases(held, args.cases, random.Random(args.cases_seed))]
    more = [(named, prompt) for _, named, prompt in prompt_cases(held, 200, random.Random(1))]
    prompts = [p for _, p in cases]
    figures: dict = {"model": str(args.model), "cases": len(cases), "cases_seed": args.cases_seed,
                     "reading": reading_scores(reader, cases), "reading_other_seed": reading_scores(reader, more)}
    clauses = reader.config
    reader.config = dataclasses.replace(clauses, clauses=False)      # the whole prompt read at once
    figures["reading_whole_prompt"] = reading_scores(reader, cases)
    figures["reading_whole_prompt_other_seed"] = reading_scores(reader, more)
    reader.config = clauses
    print("reading", figures["reading"], figures["reading_other_seed"], figures["reading_whole_prompt"], flush=True)
    texts = pipe.semantic.encode_texts(prompts).cpu()
    with torch.no_grad():
        text_means = pipe.base.prompt_mean(texts) if pipe.base.text_planes is not None else None
    names = list(reader.table)
    directions = None
    if any(v.startswith(("steer", "oraclesteer")) for v in args.variants):
        if args.triplanes is None:
            raise SystemExit("steer variants need --triplanes")
        directions = value_means(pipe, args.triplanes, args.data)
    for variant in args.variants:
        started = time.perf_counter()
        g = torch.Generator().manual_seed(1)
        means = None
        if variant == "oracle" or variant.startswith("oraclesteer"):
            rows = []
            for named, _ in cases:
                score = torch.zeros(reader.config.bank)
                for name, value in named.items():
                    score += (reader.bank_codes[:, names.index(name)] == reader.table[name].index(value)).float()
                best = torch.nonzero(score == score.max()).flatten()
                rows.append(best[torch.randperm(len(best), generator=g)[:reader.config.draws]])
            chosen = [reader.bank_latents.float()[r] for r in rows]
            latents = torch.stack([torch.nn.functional.normalize(c.mean(0), dim=-1) * c.norm(dim=-1).mean()
                                   for c in chosen])
            if variant.startswith("oraclesteer"):      # the shipped planes, steered toward the true values
                if text_means is None:
                    continue
                with torch.no_grad():
                    means = 0.5 * (pipe.base.mean_planes(latents) + text_means)
                truth = [{name: (value, 1.0) for name, value in named.items()} for named, _ in cases]
                means = steered(means, truth, directions, float(variant[len("oraclesteer"):]))
        elif variant in ("reader", "blend") or variant.startswith("steer"):
            latents = torch.cat([reader.draw(prompts[k:k + 16], generator=g) for k in range(0, len(prompts), 16)])
            if variant != "reader":
                if text_means is None:
                    continue
                with torch.no_grad():
                    means = 0.5 * (pipe.base.mean_planes(latents) + text_means)
            if variant.startswith("steer"):
                readings = [reader.read(p).named(reader.config.said) for p in prompts]
                means = steered(means, readings, directions, float(variant[len("steer"):]))
        elif variant == "prior":
            latents = torch.cat([pipe.prior.sample(texts[k:k + 16], generator=g) for k in range(0, len(texts), 16)])
            means = text_means
        else:
            raise SystemExit(f"unknown variant {variant!r}")
        planes = _generate(pipe, latents, seed=10_000, batch=16, steps=args.steps, means=means)
        judged = judge_planes(judge, pipe, planes)
        acc, per = _accuracy([(n, v, j[n]) for (named, _), j in zip(cases, judged) for n, v in named.items()])
        key = variant.replace(".", "_")       # keys the report's templates can name
        figures[key] = {"text_attr_acc": acc, "per_attribute": per, "stray_opacity": round(stray(pipe, planes), 4),
                        "seconds": round(time.perf_counter() - started, 1)}
        print(variant, round(acc, 3), {k: round(v, 2) for k, v in per.items()},
              "stray", figures[key]["stray_opacity"], flush=True)
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
