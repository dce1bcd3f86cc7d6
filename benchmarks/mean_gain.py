"""Do avatars carry more of their portrait's or prompt's attributes when the planes the base model starts from
are pushed further from the average? The heads are regressions, so their planes are shrunk toward the mean;
this scales each case's deviation by a gain before sampling.

    .venv/bin/python benchmarks/mean_gain.py MODEL --data DATA [--gains 1,1.5,2] [--out F.json]

Portraits (the 100 held-out portraits of `rodin eval semantic`, its noise): the mean-planes head's planes,
deviations from their average over the cases. Prompts (its 100 paraphrased prompts, z from the prior as it
draws them): the text head's planes, deviations from the text head's planes for "a person". Gain 1 reproduces
`portrait_attr_acc` and `text_attr_acc`.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--gains", default="1,1.5,2")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from rodin.eval.semantic import JUDGED, _accuracy, _generate, _judged, judge_planes, prompt_cases
    from rodin.io import write_json
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.judge import dataset_subjects, load_judge

    pipe = RodinPipeline.from_pretrained(args.model)
    if pipe.base.text_planes is None or pipe.base.mean_planes is None:
        raise SystemExit(f"{args.model}: its base needs a mean-planes head and a text head")
    judge = load_judge(args.model / "judge").eval()
    held = [(f, json.loads((f / "attributes.json").read_text())) for f, split in dataset_subjects(args.data)
            if split != "train"]
    chosen = held[:100]
    truth = [attrs for _, attrs in chosen]
    z = torch.cat([pipe.encode_image(f / "portrait.png") for f, _ in chosen])
    cases = [(named, prompt) for _, named, prompt in prompt_cases([a for _, a in held], 100, random.Random(0))]
    texts = pipe.semantic.encode_texts([p for _, p in cases]).cpu()
    g = torch.Generator().manual_seed(1)
    text_z = torch.cat([pipe.prior.sample(texts[k:k + 16], generator=g) for k in range(0, len(texts), 16)])
    with torch.no_grad():
        heads = pipe.base.mean_planes(z)
        prompts = pipe.base.prompt_mean(texts)
        person = pipe.base.prompt_mean(pipe.semantic.encode_texts(["a person"]).cpu())
    gains = [float(x) for x in args.gains.split(",")]
    results: dict[str, list] = {"gains": gains, "portrait": [], "prompt": []}     # lists, in the order of gains
    for gain in gains:
        means = heads.mean(0, keepdim=True) + gain * (heads - heads.mean(0, keepdim=True))
        judged = judge_planes(judge, pipe, _generate(pipe, z, seed=0, batch=16, steps=args.steps, means=means))
        portrait, _ = _accuracy([(n, t[n], j[n]) for t, j in zip(truth, judged) for n in JUDGED if _judged(t, n)])
        means = person + gain * (prompts - person)
        judged = judge_planes(judge, pipe, _generate(pipe, text_z, seed=10_000, batch=16, steps=args.steps,
                                                     means=means))
        prompt, _ = _accuracy([(n, v, j[n]) for (named, _), j in zip(cases, judged) for n, v in named.items()])
        results["portrait"].append(round(portrait, 3))
        results["prompt"].append(round(prompt, 3))
        print(f"gain {gain:g}: portrait_attr_acc {portrait:.3f}, text_attr_acc {prompt:.3f}", flush=True)
    figures = {"model": str(args.model), "data": str(args.data), "steps": args.steps, "results": results}
    if args.out:
        write_json(args.out, figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
