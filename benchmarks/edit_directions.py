"""Edits along raw text directions against directions mapped through the latent prior, on the same cases.

Runs `rodin eval semantic`'s edit cases (and its portrait cases, which the edits start from) once per
edit space, so that only the direction differs:

    .venv/bin/python benchmarks/edit_directions.py MODEL --data DATA [--subjects 50] [--edits 100]
        [--strength 1.0] [--out F.json]

"text": z moves along normalise(T(target) - T(source)) (what edits did before 2026-12-03);
"prior": along the difference of the prior's mean draws for the two sentences (`rodin.semantic.edit`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rodin.eval.semantic import evaluate_semantic
from rodin.io import write_json
from rodin.pipeline import RodinPipeline
from rodin.semantic.edit import EditDirections
from rodin.semantic.judge import load_judge

FIGURES = ("portrait_attr_acc", "edit_success", "edit_preservation", "edit_cases", "edit_strength")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=50)
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--spaces", default="text,prior")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    pipe = RodinPipeline.from_pretrained(args.model)
    judge = load_judge(args.model / "judge").eval()
    results = {"model": str(args.model), "data": str(args.data), "steps": args.steps}
    for space in args.spaces.split(","):
        pipe._edits = EditDirections(pipe._text_encoder(), prior=pipe.prior if space == "prior" else None)
        figures = evaluate_semantic(pipe, judge, args.data, subjects=args.subjects, prompts=1, edits=args.edits,
                                    strength=args.strength, steps=args.steps, log=lambda m: None)
        results[space] = {k: figures[k] for k in FIGURES}
        print(json.dumps({space: results[space]}), flush=True)
    if args.out:
        write_json(args.out, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
