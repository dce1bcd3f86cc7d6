"""Sharded fitting gives the tri-planes of unsharded fitting, and each shard restarts on its own."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from rodin.config import get_preset
from rodin.data.synth import synth_dataset
from rodin.errors import ConfigError, DataError, FitError
from rodin.fit.run import fit_dataset
from rodin.fit.shards import Shard, merge_shards
from rodin.fit.store import TriplaneStore

QUIET = dict(log=lambda m: None, show_progress=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    synth_dataset(root / "data", subjects=7, views=4, resolution=16, portrait_resolution=16, progress=False)
    tiny = get_preset("tiny")
    preset = replace(tiny, fit=replace(tiny.fit, joint_subjects=2, joint_rounds=1, joint_steps_per_turn=3, steps=4,
                                       batch_subjects=2, heldout_views=1, rays_per_step=256),
                     render=replace(tiny.render, samples=8, occupancy_resolution=8))
    return root, preset


def test_two_shards_give_the_planes_of_one_run(setup):
    root, preset = setup
    whole = fit_dataset(root / "data", root / "whole", preset=preset, **QUIET)
    # The joint stage once, then 2 shards (as 2 machines would run them), the last one merging.
    fit_dataset(root / "data", root / "sharded", preset=preset, joint_only=True, **QUIET)
    first = fit_dataset(root / "data", root / "sharded", preset=preset, shard=Shard(1, 2), **QUIET)
    assert first["shard"] == "1-of-2" and first["subjects"] == 2     # 5 frozen subjects: batches of 2, 2, 1
    merged = fit_dataset(root / "data", root / "sharded", preset=preset, shard=Shard(0, 2), **QUIET)
    assert merged["shards"] == 2 and merged["subjects_fitted"] == whole["subjects_fitted"] == 7

    a = TriplaneStore.open(root / "whole" / "triplanes")
    b = TriplaneStore.open(root / "sharded" / "triplanes")
    assert a.ids == b.ids and all(b.done)
    assert np.array_equal(np.asarray(a.planes), np.asarray(b.planes))   # the same subjects in the same batches
    assert np.allclose(a.stats().mean, b.stats().mean) and np.allclose(a.stats().std, b.stats().std)
    assert merged["heldout_psnr_mean"] == pytest.approx(whole["heldout_psnr_mean"])

    # A finished shard run again fits nothing; merging again changes nothing.
    fit_dataset(root / "data", root / "sharded", preset=preset, shard=Shard(1, 2), **QUIET)
    assert json.loads((root / "sharded" / "shards" / "1-of-2" / "done.json").read_text())["frozen_subjects"] == 0
    merge_shards(root / "sharded", log=lambda m: None)
    assert np.array_equal(np.asarray(a.planes), np.asarray(TriplaneStore.open(root / "sharded" / "triplanes").planes))


def test_shards_need_the_joint_stage_and_a_clear_shard(setup, tmp_path):
    root, preset = setup
    with pytest.raises(FitError, match="--joint-only"):
        fit_dataset(root / "data", tmp_path / "run", preset=preset, shard=Shard(0, 2), **QUIET)
    with pytest.raises(DataError, match="no shards"):
        merge_shards(tmp_path / "run", log=lambda m: None)
    for bad in ("2/2", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError):
            Shard.parse(bad)
    assert Shard.parse(" 1 / 4 ") == Shard(1, 4)
