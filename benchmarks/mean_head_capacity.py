"""How much of a subject's tri-plane z can say, by regressions of different capacity: the base model's own
mean-planes head (trained jointly with the UNet), the same head and a wider one trained alone, and a ridge
(linear) map from z to the planes. Each is scored on held-out subjects by its error in the base model's
normalised plane units, as a share of the held-out planes' variance around the training mean (the
figure `rodin train base` logs as heldout_mean_error), and by the judge reading renders of its planes.

    .venv/bin/python benchmarks/mean_head_capacity.py MODEL --triplanes RUN --data DATA [--steps 1500]
        [--widths 32,64] [--subjects 40] [--knn 1,4,16] [--out F.json]

RUN is the fit the base model was trained on (its training split trains every regression here). Answers
whether the head is short of capacity (a wider head or a longer fit does better) or z is short of
information (every regression stops at the same error, the linear one included). With --knn, also the
mean planes of the k training subjects whose z lie nearest (cosine): a retrieval in place of a regression,
whose planes are real subjects' rather than an average over all of them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from rodin.diffusion.mean_planes import MeanPlanes
from rodin.diffusion.unet import unit_rms
from rodin.eval.semantic import planes_attribute_accuracy
from rodin.fit.store import TriplaneStore
from rodin.io import write_json
from rodin.pipeline import RodinPipeline
from rodin.semantic.judge import load_judge
from rodin.train.base import PortraitLatents, load_plane_sets, portrait_paths
from rodin.triplane.triplane import resize_planes


def error_share(made: torch.Tensor, truth: torch.Tensor, train_mean: torch.Tensor) -> float:
    return (F.mse_loss(made, truth) / F.mse_loss(train_mean.expand_as(truth), truth)).item()


def train_head(head: MeanPlanes, z: torch.Tensor, planes: torch.Tensor, *, steps: int, seed: int = 0) -> float:
    """The head alone, by its own MSE, as `rodin train base` trains it (AdamW 5e-4, batch 16, cosine)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    began = time.time()
    for _ in range(steps):
        rows = torch.randint(len(z), (16,), generator=g)
        loss = F.mse_loss(head(z[rows]), planes[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--triplanes", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--judge", type=Path, default=Path("models/small-1k/judge"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--widths", default="32,64", help="widths of heads trained alone (\"\" for none)")
    parser.add_argument("--subjects", type=int, default=40, help="held-out subjects the judge reads")
    parser.add_argument("--knn", default="", help="k of nearest-neighbour retrievals, comma-separated")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    torch.manual_seed(0)
    pipe = RodinPipeline.from_pretrained(args.model)
    base = pipe.base.float()
    if base.mean_planes is None:
        raise SystemExit(f"{args.model}: its base model has no mean-planes head")
    cfg = base.config.unet
    store = TriplaneStore.open(args.triplanes / "triplanes")
    train_rows, held_rows = load_plane_sets(store)
    encode = PortraitLatents(pipe.semantic, "semantic")

    def planes_and_z(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        planes = resize_planes(store.get(rows).float(), cfg.resolution)
        ids = [store.ids[i] for i in rows]
        with torch.no_grad():
            return base.normalise(planes), encode(portrait_paths(args.data, ids)).float()

    train_planes, train_z = planes_and_z(train_rows)
    held_planes, held_z = planes_and_z(held_rows)
    train_mean = train_planes.mean(0, keepdim=True)
    judge = load_judge(args.judge)
    seen = held_rows[:args.subjects]
    truth = [json.loads((args.data / store.ids[i] / "attributes.json").read_text()) for i in seen]

    def judged(rolled: torch.Tensor) -> float:
        return planes_attribute_accuracy(judge, pipe.decoder, pipe.render, base.denormalise(rolled[:len(seen)]),
                                         truth)

    results: dict[str, dict] = {}

    def record(name: str, made: torch.Tensor, **extra) -> None:
        results[name] = {"heldout_error_share": round(error_share(made, held_planes, train_mean), 4),
                         "judge_accuracy": round(judged(made), 4), **extra}
        print(name, results[name], flush=True)

    with torch.no_grad():
        record("fitted_planes", held_planes)
        record("training_mean", train_mean.expand_as(held_planes))
        record("model_head", base.mean_planes(held_z))

    # Ridge: z (unit RMS, as the head reads it, plus a constant) to the flattened roll-out, closed form.
    x = torch.cat([unit_rms(train_z), torch.ones(len(train_z), 1)], 1).double()
    y = train_planes.flatten(1).double()
    x_held = torch.cat([unit_rms(held_z), torch.ones(len(held_z), 1)], 1).double()
    for lam in (1.0, 10.0, 100.0):
        w = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
        record(f"ridge_{lam:g}", (x_held @ w).float().reshape(held_planes.shape), train_error_share=round(
            error_share((x @ w).float().reshape(train_planes.shape), train_planes, train_mean), 4))

    for width in (int(w) for w in args.widths.split(",") if w.strip()):
        torch.manual_seed(0)
        head = MeanPlanes(replace(cfg, width=width))
        seconds = train_head(head, train_z, train_planes, steps=args.steps)
        with torch.no_grad():
            record(f"head_{width}_alone", head(held_z),
                   params=sum(p.numel() for p in head.parameters()), seconds=round(seconds, 1),
                   train_error_share=round(error_share(head(train_z), train_planes, train_mean), 4))

    similarity = F.normalize(held_z, dim=-1) @ F.normalize(train_z, dim=-1).T
    for k in (int(k) for k in args.knn.split(",") if k.strip()):
        nearest = similarity.topk(k, dim=-1).indices
        record(f"knn_{k}", train_planes[nearest].mean(1))

    figures = {"model": args.model, "triplanes": str(args.triplanes), "train_subjects": len(train_rows),
               "heldout_subjects": len(held_rows), "judged_subjects": len(seen), "steps": args.steps,
               "results": results}
    if args.out:
        write_json(args.out, figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
