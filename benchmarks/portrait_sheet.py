"""A picture of portraits' avatars: per row the portrait as the model sees it (a render, or a photo cropped
and on white), then its avatar as drawn (the diffusion alone) and fitted to the portrait (`pipe(image=...)`
now), each at 0, 60 and 180 degrees, same seed and noise, upsampler included.

    .venv/bin/python benchmarks/portrait_sheet.py MODEL --image P [--image ...] --out sheet.png
        [--steps 10] [--resolution 64]

The back column shows what the fit must leave alone: the portrait sees none of it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--image", type=Path, action="append", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from rodin.io import to_uint8
    from rodin.pipeline import RodinPipeline
    from rodin.render.turntable import grid
    from rodin.semantic.face import prepare_portrait
    from rodin.train.base import render_planes

    pipe = RodinPipeline.from_pretrained(args.model)
    azimuths = [0.0, 60.0, 180.0]
    tiles = []
    for row, image in enumerate(args.image):
        seen = prepare_portrait(image, size=args.resolution).pixels.permute(1, 2, 0).numpy()
        tiles.append(to_uint8(seen))
        for fit_steps in (0, None):
            started = time.time()
            avatar = pipe(image=image, seed=row, steps=args.steps, portrait_steps=fit_steps)
            tiles.extend(render_planes(avatar.planes, pipe.decoder, pipe.render, azimuths=azimuths,
                                       resolution=args.resolution))
            print(f"row {row}: {image} {'fitted' if fit_steps is None else 'drawn'} in {time.time() - started:.1f} s")
    print("columns: portrait | drawn at 0, 60, 180 | fitted at 0, 60, 180")
    sheet = grid(np.stack(tiles), 1 + 2 * len(azimuths))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, sheet)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
