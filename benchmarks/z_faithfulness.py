"""Does the base model draw what z says? Stage 2 measured apart from the encoder that makes z.

`rodin eval semantic` scores avatars drawn from held-out portraits against the subjects' true attributes,
so an attribute the encoder leaves out of z counts against the base model too. This script draws the same
avatars (the same 100 held-out subjects, seeds and sampling steps as `rodin eval semantic`'s
`portrait_attr_acc_drawn`, which it reproduces) and reads, per attribute:

- `portrait`: the judge on the true portrait (the ceiling of any avatar by this judge);
- `z`: a linear probe of z (logistic regression fitted on the training portraits' z, as
  `benchmarks/z_probe.py`), scored against the truth: what z carries in a form a linear map reads;
- `drawn`: the judge on the drawn avatar, against the truth;
- `chance`: the drawn avatars against *other* subjects' truth (every ordered pair of distinct subjects),
  the score of an avatar that ignores its z but keeps the attribute frequencies;
- `drawn_if_z_right` / `drawn_if_z_wrong`: `drawn` over the subjects whose z the probe reads right / wrong.

    .venv/bin/python benchmarks/z_faithfulness.py MODEL --data DATA [--subjects 100] [--steps 10]
        [--out F.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from z_probe import probe_model

from rodin.eval.semantic import _generate, _judged, judge_planes
from rodin.io import write_json
from rodin.pipeline import RodinPipeline
from rodin.semantic.judge import JUDGED, dataset_subjects, load_judge, subject_labels
from rodin.semantic.pixel_encoder import load_portrait
from rodin.train.base import PortraitLatents


def _mean(values: list[bool]) -> float | None:
    return float(np.mean(values)) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--judge", type=Path, help="default: MODEL/judge")
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    pipe = RodinPipeline.from_pretrained(args.model)
    judge = load_judge(args.judge or args.model / "judge")
    subjects = dataset_subjects(args.data)
    attrs = [json.loads((folder / "attributes.json").read_text()) for folder, _ in subjects]
    train = torch.tensor([split == "train" for _, split in subjects])
    held = [k for k, (_, split) in enumerate(subjects) if split != "train"][:args.subjects]

    # the probe: fitted on the training portraits' z, applied to the z the avatars are drawn from
    latents = PortraitLatents(pipe.semantic, "semantic")
    train_rows = [k for k in range(len(subjects)) if train[k]]
    z_train = torch.cat([latents([subjects[k][0] / "portrait.png" for k in train_rows[i:i + 256]])
                         for i in range(0, len(train_rows), 256)])
    z_held = torch.cat([pipe.encode_image(subjects[k][0] / "portrait.png") for k in held])
    mean, std = z_train.mean(0), z_train.std(0).clamp_min(1e-6)
    z_all = (torch.cat([z_train, z_held]) - mean) / std
    is_train = torch.cat([torch.ones(len(z_train), dtype=torch.bool), torch.zeros(len(held), dtype=torch.bool)])
    labels = torch.tensor([subject_labels(attrs[k], str(subjects[k][0])) for k in train_rows + held])
    probed = {}
    for a, name in enumerate(JUDGED):
        predict = probe_model(z_all, labels[:, a], is_train, len(JUDGED[name]))
        probed[name] = [JUDGED[name][int(c)] for c in predict(z_all[~is_train])]

    truth = [attrs[k] for k in held]
    on_portrait = judge.predict(torch.stack([load_portrait(subjects[k][0] / "portrait.png", size=64) for k in held]))
    drawn = judge_planes(judge, pipe, _generate(pipe, z_held, seed=args.seed, batch=16, steps=args.steps))

    per: dict[str, dict] = {}
    pooled: dict[str, list[bool]] = {key: [] for key in ("portrait", "z", "drawn", "chance", "drawn_if_z_right",
                                                          "drawn_if_z_wrong")}
    for name in JUDGED:
        rows = [i for i, t in enumerate(truth) if _judged(t, name)]
        hits = {
            "portrait": [on_portrait[i][name] == truth[i][name] for i in rows],
            "z": [probed[name][i] == truth[i][name] for i in rows],
            "drawn": [drawn[i][name] == truth[i][name] for i in rows],
            "chance": [drawn[j][name] == truth[i][name] for i in rows for j in rows if j != i],
            "drawn_if_z_right": [drawn[i][name] == truth[i][name] for i in rows if probed[name][i] == truth[i][name]],
            "drawn_if_z_wrong": [drawn[i][name] == truth[i][name] for i in rows if probed[name][i] != truth[i][name]],
        }
        per[name] = {key: _mean(v) for key, v in hits.items()} | {"cases": len(rows)}
        for key, v in hits.items():
            # chance enters the pooled mean once per subject (its mean over the other subjects)
            pooled[key] += v if key != "chance" else [np.mean(v[k * (len(rows) - 1):(k + 1) * (len(rows) - 1)])
                                                     for k in range(len(rows))]
    figures = {"model": str(args.model), "data": str(args.data), "subjects": len(held), "steps": args.steps,
               "seed": args.seed, "mean": {key: _mean(v) for key, v in pooled.items()}, "per_attribute": per}
    for key, value in figures["mean"].items():
        print(f"{key:18s} {value:.3f}")
    print(json.dumps(figures), flush=True)
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
