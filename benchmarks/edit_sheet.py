"""A picture of edits: per row a held-out portrait, its avatar, and the same avatar edited by each given
model (same z, same noise), front and 30 degrees.

    .venv/bin/python benchmarks/edit_sheet.py --data DATA --model NAME=MODEL [--model NAME=MODEL ...]
        --edit "in a green top" [--edit ...] --out sheet.png [--subjects 8] [--steps 10]

Row k edits the k-th held-out subject of DATA with the k-th edit (edits repeat when fewer). The first
model draws the unedited avatar; every model must share its semantic encoder and base model for the
columns to be comparable (copies differing in MODEL/edits, say). Columns are printed in order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL folder")
    parser.add_argument("--edit", action="append", required=True)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import json

    from rodin.io import to_uint8
    from rodin.pipeline import RodinPipeline
    from rodin.render.turntable import grid
    from rodin.semantic.judge import dataset_subjects
    from rodin.semantic.pixel_encoder import load_portrait
    from rodin.train.base import render_planes

    models = [spec.split("=", 1) for spec in args.model]
    pipes = [(name, RodinPipeline.from_pretrained(Path(path))) for name, path in models]
    held = [f for f, split in dataset_subjects(args.data) if split != "train"][:args.subjects]
    azimuths = [0.0, 30.0]
    tiles = []
    for row, folder in enumerate(held):
        edit = args.edit[row % len(args.edit)]
        tiles.append(to_uint8(load_portrait(folder / "portrait.png", size=args.resolution).permute(1, 2, 0).numpy()))
        first = pipes[0][1]
        avatar = first(image=folder / "portrait.png", seed=row, steps=args.steps, upsample=False)
        views = [avatar] + [pipe.edit(avatar, edit=edit) for _, pipe in pipes]
        for view in views:
            tiles.extend(render_planes(view.planes, first.decoder, first.render, azimuths=azimuths,
                                       resolution=args.resolution))
        attrs = json.loads((folder / "attributes.json").read_text())
        print(f"row {row}: {folder.name} ({attrs.get('hair_colour')} hair, {attrs.get('clothing_colour')} "
              f"{attrs.get('clothing')}, hat {attrs.get('hat')}) edited {edit!r}")
    print("columns: portrait | avatar x2 | " + " | ".join(f"{name} x2" for name, _ in pipes))
    sheet = grid(np.stack(tiles), 1 + len(azimuths) * (1 + len(pipes)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, sheet)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
