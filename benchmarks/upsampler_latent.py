"""How much the upsampler's output depends on z: the same shrunken fitted planes upsampled with the z of
the encoder it was trained with, with the z of another encoder, and with the null z, each rendered and
scored against renders of the fitted planes themselves (the ceiling); bicubic enlargement beside.

    .venv/bin/python benchmarks/upsampler_latent.py MODEL --triplanes RUN --data DATA [--other-semantic DIR]
        [--subjects 20] [--out F.json]

The subjects are RUN's held-out (val/test) rows. Answers whether a model whose encoder was retrained can
keep an upsampler trained on the old z space (feeding it the null z, or the new z), or must retrain it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rodin.fit.store import TriplaneStore
from rodin.io import write_json
from rodin.pipeline import RodinPipeline
from rodin.semantic.loading import load_semantic
from rodin.train.base import PortraitLatents, render_planes
from rodin.triplane.triplane import resize_planes

AZIMUTHS = [-60.0, -30.0, 0.0, 30.0, 60.0, 180.0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0 ** 2
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--triplanes", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--other-semantic", type=Path, help="an encoder other than MODEL's, whose z to try")
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    pipe = RodinPipeline.from_pretrained(args.model)
    up = pipe.upsampler
    store = TriplaneStore.open(args.triplanes / "triplanes")
    rows = [i for i, done in enumerate(store.done) if done and store.splits[i] != "train"][:args.subjects]
    portraits = [args.data / store.ids[i] / "portrait.png" for i in rows]
    full = resize_planes(store.get(rows).float(), up.config.unet.resolution)
    low = resize_planes(full, up.config.base_resolution)
    latents = {"own": torch.cat([pipe.encode_image(p) for p in portraits]), "null": None}
    if args.other_semantic:
        latents["other"] = PortraitLatents(load_semantic(args.other_semantic), "semantic")(portraits)

    def score(planes: torch.Tensor) -> float:
        return float(np.mean([_psnr(render_planes(p, pipe.decoder, pipe.render, azimuths=AZIMUTHS),
                                    render_planes(f, pipe.decoder, pipe.render, azimuths=AZIMUTHS))
                              for p, f in zip(planes, full)]))

    figures: dict = {"model": args.model, "triplanes": str(args.triplanes), "subjects": len(rows),
                     "other_semantic": str(args.other_semantic) if args.other_semantic else None,
                     "bicubic_psnr": score(resize_planes(low, up.config.unet.resolution, mode="bicubic"))}
    with torch.no_grad():
        for name, z in latents.items():
            made = torch.cat([up.sample(low[k:k + 1], None if z is None else z[k:k + 1],
                                        generator=torch.Generator().manual_seed(k)) for k in range(len(rows))])
            figures[f"{name}_z_psnr"] = score(made)
    print(json.dumps(figures), flush=True)
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
