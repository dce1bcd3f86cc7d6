"""How much of each attribute z carries: per attribute, a linear classifier on the z of the training
subjects' portraits, scored on the held-out (val/test) subjects' portraits against their labels.

    .venv/bin/python benchmarks/z_probe.py SEMANTIC --data DATA [--out F.json]

SEMANTIC is an encoder folder (MODEL/semantic). The held-out figure bounds what any base model conditioned
on this z can draw of a subject it never saw: an attribute z does not carry, no later stage can recover.
Logistic regression (L-BFGS, L2 1e-3) on z standardised with the training statistics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from rodin.io import write_json
from rodin.semantic.judge import JUDGED, dataset_subjects, subject_labels
from rodin.semantic.loading import load_semantic
from rodin.train.base import PortraitLatents


def probe_model(z: torch.Tensor, y: torch.Tensor, train: torch.Tensor, classes: int):
    """A linear classifier of y from z, fitted on the labelled rows of `train`: a function of z -> class."""
    weight = torch.zeros(z.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=300)
    fit = train & (y >= 0)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(z[fit] @ weight + bias, y[fit]) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    weight, bias = weight.detach(), bias.detach()
    return lambda latents: (latents @ weight + bias).argmax(1)


def probe(z: torch.Tensor, y: torch.Tensor, train: torch.Tensor, classes: int) -> tuple[float, float]:
    """(held-out accuracy, training accuracy) of a linear classifier of y from z."""
    right = probe_model(z, y, train, classes)(z) == y
    fit, test = train & (y >= 0), ~train & (y >= 0)
    return float(right[test].float().mean()), float(right[fit].float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("semantic", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    latents = PortraitLatents(load_semantic(args.semantic), "semantic")
    subjects = dataset_subjects(args.data)
    paths = [folder / "portrait.png" for folder, _ in subjects]
    z = torch.cat([latents(paths[i:i + 256]) for i in range(0, len(paths), 256)])
    labels = torch.tensor([subject_labels(json.loads((folder / "attributes.json").read_text()), str(folder))
                           for folder, _ in subjects])
    train = torch.tensor([split == "train" for _, split in subjects])
    z = (z - z[train].mean(0)) / z[train].std(0).clamp_min(1e-6)
    heldout, training = {}, {}
    for a, name in enumerate(JUDGED):
        heldout[name], training[name] = probe(z, labels[:, a], train, len(JUDGED[name]))
    figures = {"semantic": str(args.semantic), "data": str(args.data), "train_subjects": int(train.sum()),
               "heldout_subjects": int((~train).sum()),
               "heldout_mean": sum(heldout.values()) / len(heldout), "heldout": heldout,
               "training_mean": sum(training.values()) / len(training), "training": training}
    print(json.dumps(figures), flush=True)
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
