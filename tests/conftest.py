"""Fixtures shared by several test files: tiny data and a tiny fit run, made once per session."""

from __future__ import annotations

import pytest

from rodin.config import get_preset
from rodin.data.synth import synth_dataset
from rodin.fit.run import fit_dataset


@pytest.fixture(scope="session")
def tiny_fit(tmp_path_factory):
    """8 generated tiny subjects (root/data) fitted with the tiny preset (root/run): (root, metrics)."""
    root = tmp_path_factory.mktemp("fit")
    synth_dataset(root / "data", subjects=8, views=16, resolution=32, seed=0, portrait_resolution=32,
                  progress=False)
    metrics = fit_dataset(root / "data", root / "run", preset=get_preset("tiny"), show_progress=False,
                          log=lambda m: None)
    return root, metrics


@pytest.fixture(scope="session")
def tiny_fit_run(tiny_fit):
    return tiny_fit[0]


@pytest.fixture(scope="session")
def tiny_semantic_model(tiny_fit_run, tmp_path_factory):
    """A complete tiny model folder: dual encoder, latent prior and base model (few steps each)."""
    from dataclasses import replace

    from rodin.semantic.loading import load_semantic
    from rodin.train.base import train_base
    from rodin.train.encoder import train_encoder
    from rodin.train.prior import train_prior

    preset = get_preset("tiny")
    data = tiny_fit_run / "data"
    out = tmp_path_factory.mktemp("semantic") / "model"
    quiet = dict(log=lambda m: None, show_progress=False)
    train_encoder(data, out, config=preset.encoder, train=preset.train_encoder, **quiet)
    train_prior(data, out, encoder=load_semantic(out / "semantic"), config=preset.prior, train=preset.train_prior,
                portraits=preset.train_encoder, **quiet)
    train_base(tiny_fit_run / "run", out, preset=preset, train_config=replace(preset.train_base, steps=10), **quiet)
    from rodin.pipeline import write_model_index

    write_model_index(out, render=preset.render, preset="tiny", components={"prior": "prior"})
    return out
