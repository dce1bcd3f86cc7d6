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
