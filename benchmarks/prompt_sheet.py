"""A picture of prompts: per row one prompt's avatar drawn without the model's prompt reader (the latent
prior's z, the text head's planes) and with it, same seed and noise, front and 40 degrees. With `--compare
steer`, drawn with the reader both times, its starting planes not steered and steered toward what the
prompt names (`PromptReader.steer`).

    .venv/bin/python benchmarks/prompt_sheet.py MODEL --prompt "..." [--prompt ...] --out sheet.png
        [--steps 10] [--resolution 64] [--compare reader|steer]

Prints each prompt with what the reader read in it. Base-resolution planes (no upsampler), as the
evaluation judges them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--prompt", action="append", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", choices=["reader", "steer"], default="reader")
    args = parser.parse_args()

    import dataclasses

    from rodin.pipeline import RodinPipeline
    from rodin.render.turntable import grid
    from rodin.train.base import render_planes

    pipe = RodinPipeline.from_pretrained(args.model)
    if pipe.reader is None:
        raise SystemExit(f"{args.model}: no prompt reader (rodin train reader)")
    reader = pipe.reader
    config = reader.config
    azimuths = [0.0, 40.0]
    tiles = []
    for row, prompt in enumerate(args.prompt):
        print(f"row {row}: {prompt!r} read as {pipe.prompt_reading(prompt)}")
        for with_reader in (False, True):
            if args.compare == "reader":
                pipe.reader = reader if with_reader else None
            else:
                reader.config = dataclasses.replace(config, steer=config.steer if with_reader else 0.0)
            avatar = pipe(prompt=prompt, seed=row, steps=args.steps, upsample=False)
            tiles.extend(render_planes(avatar.planes, pipe.decoder, pipe.render, azimuths=azimuths,
                                       resolution=args.resolution))
    pipe.reader, reader.config = reader, config
    print("columns: " + ("without the reader x2 | with it x2" if args.compare == "reader" else
                         "not steered x2 | steered x2"))
    sheet = grid(np.stack(tiles), 2 * len(azimuths))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, sheet)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
