"""Does the image tower know more of a subject's planes than its 64-d z says? Ridge regressions to the
base model's normalised planes from z and from the image tower's pooled features (before its last linear
layer), scored on held-out subjects by error share and by the judge reading renders of their planes.

    .venv/bin/python benchmarks/portrait_features.py MODEL --triplanes RUN --data DATA [--subjects 40]
        [--out F.json]

As benchmarks/mean_head_capacity.py, whose ridge from z shipped as the linear mean-planes head: if the
pooled features' regression reads much better, z is the bottleneck of the portrait route, not the head.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from rodin.diffusion.mean_planes import RidgeSums
from rodin.diffusion.unet import unit_rms
from rodin.eval.semantic import planes_attribute_accuracy
from rodin.fit.store import TriplaneStore
from rodin.io import write_json
from rodin.pipeline import RodinPipeline
from rodin.semantic.judge import load_judge
from rodin.semantic.pixel_encoder import load_portrait
from rodin.semantic.space import latent_from_embedding
from rodin.train.base import load_plane_sets, portrait_paths
from rodin.triplane.triplane import resize_planes


@torch.no_grad()
def features(encoder, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, pooled features) of portrait files, as `PortraitLatents` reads them."""
    pixels = torch.stack([load_portrait(p, size=encoder.image_size) for p in paths])
    tower = encoder.image
    pooled = torch.cat([tower.net((chunk - tower.mean) * 2.0).mean(dim=(2, 3)) for chunk in pixels.split(256)])
    return latent_from_embedding(tower.head(pooled)), pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--triplanes", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--judge", type=Path, default=None)
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    pipe = RodinPipeline.from_pretrained(args.model)
    base = pipe.base.float()
    store = TriplaneStore.open(args.triplanes / "triplanes")
    train_rows, held_rows = load_plane_sets(store)

    def planes_and_features(rows: list[int]):
        planes = base.normalise(resize_planes(store.get(rows).float(), base.config.unet.resolution))
        return planes, *features(pipe.semantic, portrait_paths(args.data, [store.ids[i] for i in rows]))

    train_planes, train_z, train_pool = planes_and_features(train_rows)
    held_planes, held_z, held_pool = planes_and_features(held_rows)
    # Pooled activations differ in scale by channel: standardised with the training statistics.
    mu, sd = train_pool.mean(0), train_pool.std(0).clamp_min(1e-6)
    train_pool, held_pool = (train_pool - mu) / sd, (held_pool - mu) / sd
    mean = train_planes.mean(0)
    judge = load_judge(args.judge or args.model / "judge")
    seen = held_rows[:args.subjects]
    truth = [json.loads((args.data / store.ids[i] / "attributes.json").read_text()) for i in seen]
    baseline = F.mse_loss(mean.expand_as(held_planes), held_planes)
    results = {}
    for name, train_x, held_x in (("z", train_z, held_z), ("pooled", train_pool, held_pool),
                                  ("z_and_pooled", torch.cat([train_z, train_pool], 1),
                                   torch.cat([held_z, held_pool], 1))):
        sums = RidgeSums(mean)
        sums.add(train_x, train_planes)
        weights, penalty = sums.solve(penalties=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0))
        made = (unit_rms(held_x).double() @ weights + mean.flatten().double()).float().reshape(held_planes.shape)
        results[name] = {"features": train_x.shape[1], "penalty": penalty,
                         "heldout_error_share": round((F.mse_loss(made, held_planes) / baseline).item(), 4),
                         "judge_accuracy": round(planes_attribute_accuracy(
                             judge, pipe.decoder, pipe.render, base.denormalise(made[:len(seen)]), truth), 4)}
        print(name, results[name], flush=True)
    figures = {"model": str(args.model), "triplanes": str(args.triplanes), "train_subjects": len(train_rows),
               "heldout_subjects": len(held_rows), "judged_subjects": len(seen), "results": results}
    if args.out:
        write_json(args.out, figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
