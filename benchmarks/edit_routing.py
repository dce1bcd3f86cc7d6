"""Where an edit's words send it: the share of the phrase-picking softmax that lands on phrases naming what
the edit asks for, with phrases picked in the encoder's text space or in the frozen sentence backbone's.

    .venv/bin/python benchmarks/edit_routing.py MODEL [--paraphrases 200] [--out F.json]

Cases: the edit texts of `rodin eval semantic` ("in a green top", "with blonde hair", ...) and paraphrased
edits (the evaluation's prompt paraphrases of one attribute, "whose top is jade", without their subject),
each with the (attribute, value) it asks for. Nothing is drawn: this isolates the routing from the base
model. MODEL needs labelled edits (`rodin train edits`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--paraphrases", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from rodin.eval.semantic import _EDITS, _SUBJECTS, paraphrase
    from rodin.io import write_json
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.edit import LABELLED_PHRASES, EditDirections, LabelledEdits

    pipe = RodinPipeline.from_pretrained(args.model)
    if pipe.edits is None:
        raise SystemExit(f"{args.model}: no labelled edits (rodin train edits)")
    named = dict(LABELLED_PHRASES)
    phrases = list(pipe.edits.config.phrases)
    rng = random.Random(0)
    paraphrased = []
    for _ in range(args.paraphrases):
        attribute, value, _ = rng.choice(_EDITS)
        text = paraphrase({attribute: value}, rng)
        subject = next(s for s in _SUBJECTS if text.startswith(s + " "))
        paraphrased.append((attribute, value, text[len(subject) + 1:]))
    sets = {"evaluation": list(_EDITS), "paraphrased": paraphrased}
    results = {}
    for routing in ("encoder", "sentence"):
        labelled = LabelledEdits(dataclasses.replace(pipe.edits.config, routing=routing))
        labelled.load_state_dict(pipe.edits.state_dict())
        directions = EditDirections(pipe.semantic, labelled=labelled)
        sharpness = labelled.config.sharpness
        results[routing] = {}
        colour_only = torch.tensor([set(dict(named.get(p, ())).keys()) == {"clothing_colour"} for p in phrases])
        clothing = torch.tensor(["clothing_colour" in dict(named.get(p, ())) for p in phrases])
        for name, cases in sets.items():
            mass, top, wrong, to_colour_only, hair_to_clothing = [], [], [], [], []
            for attribute, value, text in cases:
                similarity = directions._routing_similarity(text)
                weights = torch.softmax(sharpness * similarity, dim=-1)
                right = torch.tensor([(attribute, value) in named.get(p, ()) for p in phrases])
                mass.append(float(weights[right].sum()))
                if attribute == "clothing_colour":
                    to_colour_only.append(float(weights[colour_only].sum()))
                if attribute == "hair_colour":
                    hair_to_clothing.append(float(weights[clothing].sum()))
                best = phrases[int(similarity.argmax())]
                top.append((attribute, value) in named.get(best, ()))
                if not top[-1]:
                    wrong.append(f"{text} -> {best}")
            results[routing][name] = {"mass": round(sum(mass) / len(mass), 3), "top1": round(sum(top) / len(top), 3),
                                      "cases": len(cases), "wrong": sorted(set(wrong)),
                                      "clothing_edits_to_colour_only": [round(min(to_colour_only), 3),
                                                                        round(max(to_colour_only), 3)],
                                      "hair_edits_to_clothing_max": round(max(hair_to_clothing), 3)}
            print(f"{routing:>8} {name:>11}: mass on the asked attribute {results[routing][name]['mass']:.3f}, "
                  f"top phrase right {results[routing][name]['top1']:.3f} ({len(cases)} cases)", flush=True)
    figures = {"model": str(args.model), "phrases": len(phrases), "results": results}
    if args.out:
        write_json(args.out, figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
