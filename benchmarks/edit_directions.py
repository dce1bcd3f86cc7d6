"""Edit directions compared on the same edits of the same avatars: raw text, through the prior, labelled.

    .venv/bin/python benchmarks/edit_directions.py MODEL --data DATA [--subjects 50] [--edits 100]
        [--spaces text,prior,labelled,identities] [--identities IDS] [--strengths 1.0] [--out F.json]

The held-out portraits of DATA are encoded and generated once; each (space, strength) only generates the
edited avatars, from the same noise as the unedited ones (`rodin.eval.semantic.edit_figures`).
"text": z moves along normalise(T(target) - T(source)).
"prior": along the difference of the prior's mean draws for the two sentences.
"labelled": along the difference of the mean portraits with and without what the nearest phrases name,
measured here from DATA's training split (`rodin.train.edits`), as `rodin train edits` measures it.
"identities": the same, measured from the training split of --identities (a set of identities made apart,
as `rodin train all` makes one).
Each space's figures are a list, one row per strength, in the order given.
The edit cases are drawn as `rodin eval semantic` draws them, but from their own random stream, so the
figures compare spaces with each other, not with that command's.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from rodin.eval.semantic import _generate, edit_cases, edit_figures
from rodin.io import write_json
from rodin.pipeline import RodinPipeline
from rodin.semantic.edit import EditDirections
from rodin.semantic.judge import dataset_subjects, load_judge
from rodin.train.edits import edits_from_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=50)
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--strengths", default="1.0", help="comma-separated edit strengths")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spaces", default="text,prior,labelled")
    parser.add_argument("--identities", type=Path, help="dataset the 'identities' space measures directions on")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    pipe = RodinPipeline.from_pretrained(args.model)
    judge = load_judge(args.model / "judge").eval()
    held = [f for f, split in dataset_subjects(args.data) if split != "train"][:args.subjects]
    truth = [json.loads((f / "attributes.json").read_text()) for f in held]
    latents = torch.cat([pipe.encode_image(f / "portrait.png") for f in held])
    cases = edit_cases(truth, args.edits, random.Random(args.seed))

    def generate(z: torch.Tensor, *, seed: int, means: torch.Tensor | None = None) -> torch.Tensor:
        return _generate(pipe, z, seed=seed, batch=16, steps=args.steps, guidance_scale=None, means=means)

    results = {"model": str(args.model), "data": str(args.data), "steps": args.steps, "subjects": len(held),
               "identities_data": str(args.identities or "")}
    before = None
    text = pipe._text_encoder()
    for space in args.spaces.split(","):
        if space == "identities" and args.identities is None:
            parser.error("the identities space needs --identities")
        source = {"labelled": args.data, "identities": args.identities}.get(space)
        labelled = edits_from_data(source, text, log=lambda m: None) if source is not None else None
        pipe._edits = EditDirections(text, prior=pipe.prior if space == "prior" else None, labelled=labelled)
        for strength in (float(s) for s in args.strengths.split(",")):
            figures, before = edit_figures(pipe, judge, latents, cases, strength=strength, generate=generate,
                                           seed=args.seed, judged_before=before)
            results.setdefault(space, []).append({"strength": strength, **figures})
            print(json.dumps({space: results[space][-1]}), flush=True)
    if args.out:
        write_json(args.out, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
