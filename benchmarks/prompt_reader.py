"""Prompts read as attributes: how well the reader reads, and what the avatars drawn from its bank show.

    .venv/bin/python benchmarks/prompt_reader.py MODEL --data DATA [--out F.json] [--variants ...]

MODEL must have a prompt reader (`rodin train reader`). The 100 text cases of `rodin eval semantic` (same
seed, same paraphrases, same noise; read by MODEL/judge) are drawn several ways:

- `oracle`: z from 4 bank portraits that have the attributes each prompt names, taken from the case itself
  (a perfect reader; the ceiling of drawing z from the bank);
- `reader`: z from the reader's draw (what the pipeline does with a reader);
- `blend`: the reader's z, the base model starting from the mean of its mean-planes head's planes and the
  text head's;
- `prior`: the latent prior's z and the text head's planes (what the pipeline does without a reader).

Reading accuracy (the named attributes read with the right value, and attributes read that the prompt does
not name) is reported on these 100 prompts and on 200 more from another seed, clause by clause (the
reader's default) and whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

import torch


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
    cases = [(named, prompt) for _, named, prompt in prompt_cases(held, 100, random.Random(0))]
    more = [(named, prompt) for _, named, prompt in prompt_cases(held, 200, random.Random(1))]
    prompts = [p for _, p in cases]
    figures: dict = {"model": str(args.model), "cases": len(cases),
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
    for variant in args.variants:
        started = time.perf_counter()
        g = torch.Generator().manual_seed(1)
        means = None
        if variant == "oracle":
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
        elif variant in ("reader", "blend"):
            latents = torch.cat([reader.draw(prompts[k:k + 16], generator=g) for k in range(0, len(prompts), 16)])
            if variant == "blend":
                if text_means is None:
                    continue
                with torch.no_grad():
                    means = 0.5 * (pipe.base.mean_planes(latents) + text_means)
        elif variant == "prior":
            latents = torch.cat([pipe.prior.sample(texts[k:k + 16], generator=g) for k in range(0, len(texts), 16)])
            means = text_means
        else:
            raise SystemExit(f"unknown variant {variant!r}")
        planes = _generate(pipe, latents, seed=10_000, batch=16, steps=args.steps, means=means)
        judged = judge_planes(judge, pipe, planes)
        acc, per = _accuracy([(n, v, j[n]) for (named, _), j in zip(cases, judged) for n, v in named.items()])
        figures[variant] = {"text_attr_acc": acc, "per_attribute": per,
                            "seconds": round(time.perf_counter() - started, 1)}
        print(variant, round(acc, 3), {k: round(v, 2) for k, v in per.items()}, flush=True)
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
