"""Where the attribute judge is wrong on ground truth: what the images show, not how long it trained.

    .venv/bin/python benchmarks/judge_visibility.py JUDGE --data DATA [--data DATA ...] [--out F.json]

Reads the held-out (val/test) subjects' portraits and front views (as `rodin eval judge` does) and splits
the judge's accuracy on the hair attributes by whether the subject wears a hat, and under a hat by hair
style and beard: the generator cuts hair away above a hat's rim, so a hat hides most styles from the front.
A judge that reads near chance there, and well without a hat, is asked for something the pixels do not
hold; no amount of training lifts it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from rodin.io import write_json
from rodin.semantic.judge import JUDGED, load_images, load_judge


def _rate(pairs: list[bool]) -> dict:
    return {"accuracy": sum(pairs) / len(pairs) if pairs else None, "images": len(pairs)}


def judge_by_visibility(judge, data: Path, *, batch: int = 256) -> dict:
    images = load_images(data, splits=("val", "test"), views="front", size=judge.config.image_size)
    predicted = [guess for start in range(0, len(images), batch)
                 for guess in judge.predict(images.pixels[start:start + batch])]
    truth = images.label_dicts()
    hats = [t["hat"] != "none" for t in truth]
    out: dict = {"subjects": len(set(images.subjects)), "images": len(images), "portraits": int(images.portrait.sum())}
    for kind, keep in (("portraits", images.portrait.tolist()), ("views", (~images.portrait).tolist())):
        split: dict = {}
        for name in JUDGED:
            rows = [(t, p, h) for t, p, h, k in zip(truth, predicted, hats, keep) if k and name in t]
            split[name] = {"hat": _rate([p[name] == t[name] for t, p, h in rows if h]),
                           "no_hat": _rate([p[name] == t[name] for t, p, h in rows if not h])}
        under: dict = defaultdict(dict)
        for name in ("hair_style", "hair_colour"):
            groups: dict = defaultdict(list)
            for t, p, h, k in zip(truth, predicted, hats, keep):
                if k and h and name in t:
                    groups[f"{t['hair_style']}_{'beard' if t['beard'] != 'none' else 'no_beard'}"].append(
                        p[name] == t[name])
            under[name] = {group: _rate(pairs) for group, pairs in sorted(groups.items())}
        out[kind] = {"by_hat": split, "under_a_hat": dict(under)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("judge", type=Path)
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    judge = load_judge(args.judge).eval()
    figures = {"judge": str(args.judge), "datasets": {d.name: judge_by_visibility(judge, d) for d in args.data}}
    for data, result in figures["datasets"].items():
        print(f"{data}: {result['subjects']} held-out subjects")
        for kind in ("portraits", "views"):
            for name in ("hair_style", "hair_colour", "glasses", "expression", "skin"):
                row = result[kind]["by_hat"][name]
                print(f"  {kind:9s} {name:12s} hat {row['hat']['accuracy']:.2f} ({row['hat']['images']})"
                      f"   no hat {row['no_hat']['accuracy']:.2f} ({row['no_hat']['images']})")
    if args.out:
        write_json(args.out, figures)
    print(json.dumps({d: {k: r[k]["by_hat"]["hair_colour"] for k in ("portraits", "views")}
                      for d, r in figures["datasets"].items()}))


if __name__ == "__main__":
    main()
