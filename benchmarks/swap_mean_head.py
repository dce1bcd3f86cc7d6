"""A trained base model with its MLP mean-planes head replaced by the linear head of `--mean-head linear`
(a ridge regression from z, fitted on the training subjects of the fit it was trained on), the UNet kept.

    .venv/bin/python benchmarks/swap_mean_head.py MODEL --triplanes RUN --data DATA --out NEW

NEW is a copy of MODEL with only base/ rewritten (its evaluation files are dropped). The UNet was trained
reading the MLP head's planes; this measures what a better mean alone brings, without retraining.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from rodin.diffusion.base import KIND, BaseDiffusion
from rodin.fit.store import TriplaneStore
from rodin.modeling import save_component
from rodin.pipeline import RodinPipeline
from rodin.train.base import PortraitLatents, fit_linear_head, load_plane_sets, portrait_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--triplanes", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    pipe = RodinPipeline.from_pretrained(args.model)
    old = pipe.base.float()
    if old.mean_planes is None:
        raise SystemExit(f"{args.model}: its base model has no mean-planes head")
    new = BaseDiffusion(replace(old.config, mean_head="linear"))
    kept = {k: v for k, v in old.state_dict().items() if not k.startswith("mean_planes.")}
    missing, unexpected = new.load_state_dict(kept, strict=False)
    if unexpected or not all(k.startswith("mean_planes.") for k in missing):
        raise SystemExit(f"the base model's weights do not match a linear-head model: {missing} {unexpected}")
    store = TriplaneStore.open(args.triplanes / "triplanes")
    rows, _ = load_plane_sets(store)
    latents = PortraitLatents(pipe.semantic, "semantic")(portrait_paths(args.data, [store.ids[i] for i in rows]))
    penalty = fit_linear_head(new, store, rows, latents)
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(args.model, args.out)
    for stale in ("eval_semantic.json", "eval_samples.json"):
        (args.out / stale).unlink(missing_ok=True)
    save_component(new, args.out / "base", kind=KIND, dtype=torch.float16)
    print(f"wrote {args.out / 'base'}: linear head fitted on {len(rows)} subjects (penalty {penalty:g})")


if __name__ == "__main__":
    main()
