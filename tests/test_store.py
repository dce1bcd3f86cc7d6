"""The tri-plane store cut into several files reads, writes and summarises like one file."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from rodin.errors import DataError
from rodin.fit.store import TriplaneStore
from rodin.train.base import streamed_plane_stats

SHAPE = (3, 2, 4, 4)


def filled(root, rows_per_file=None, dtype="float16", n=7):
    ids = [f"s{i}" for i in range(n)]
    splits = ["train"] * (n - 2) + ["test"] * 2
    store = TriplaneStore.create(root, ids, splits, SHAPE, dtype=dtype, rows_per_file=rows_per_file)
    planes = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(0))
    planes[:, :, 1] += 3.0
    order = [4, 0, 6, 2, 1, 5, 3]              # written out of order, across file boundaries
    store.put(order[:4], planes[order[:4]])
    store.put(order[4:], planes[order[4:]])
    return store, planes


def test_several_files_hold_the_rows_of_one(tmp_path):
    one, planes = filled(tmp_path / "one")
    many, _ = filled(tmp_path / "many", rows_per_file=3)
    assert sorted(p.name for p in (tmp_path / "one").glob("planes*.npy")) == ["planes.npy"]
    assert sorted(p.name for p in (tmp_path / "many").glob("planes*.npy")) == [
        "planes-00000.npy", "planes-00001.npy", "planes-00002.npy"]     # 3 + 3 + 1 rows
    reopened = TriplaneStore.open(tmp_path / "many")
    assert reopened.planes.shape == one.planes.shape == (7, *SHAPE)
    for rows in ([5, 0, 3, 6], [2], 4, [6, 6, 1], slice(1, 6)):
        assert torch.equal(reopened.get(rows), one.get(rows))
    assert torch.allclose(reopened.get(list(range(7))), planes, atol=2e-3)   # float16 storage
    assert np.array_equal(np.asarray(reopened.planes), np.asarray(one.planes))
    a, b = one.compute_stats(), reopened.compute_stats()
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    assert abs(float(b.mean[1]) - float(planes[:5, :, 1].mean())) < 1e-2     # over the training split only
    # Base training's own pass (resized, in chunks) sees the same rows too.
    rows = [0, 2, 4, 6]
    for x, y in zip(streamed_plane_stats(one, rows, 2, chunk=3), streamed_plane_stats(reopened, rows, 2)):
        assert torch.allclose(x, y, atol=1e-6)
    # A DataLoader worker gets a pickled copy that maps the files itself.
    assert torch.equal(pickle.loads(pickle.dumps(reopened)).get([6, 1]), one.get([6, 1]))


def test_float32_storage_and_resume_keep_the_layout(tmp_path):
    store, planes = filled(tmp_path / "f32", rows_per_file=4, dtype="float32")
    assert torch.equal(store.get(list(range(7))), planes)                     # exact in float32
    again = TriplaneStore.create(tmp_path / "f32", store.ids, store.splits, SHAPE, dtype="float32", rows_per_file=4)
    assert again.planes.rows_per_file == 4 and again.planes.dtype == np.float32 and all(again.done)
    with pytest.raises(DataError, match="storage"):
        TriplaneStore.create(tmp_path / "x", ["a"], ["train"], SHAPE, dtype="int8")


def test_a_store_written_before_several_files_still_opens(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    planes = np.random.default_rng(0).standard_normal((3, *SHAPE)).astype(np.float16)
    np.save(root / "planes.npy", planes)
    (root / "subjects.json").write_text(json.dumps({"ids": ["a", "b", "c"], "splits": ["train"] * 3,
                                                    "done": [True] * 3, "failed": {}}))   # no shape, no layout
    store = TriplaneStore.open(root)
    assert torch.equal(store.get([2, 0]), torch.from_numpy(planes[[2, 0]].astype(np.float32)))


def test_a_missing_or_wrong_file_is_named(tmp_path):
    filled(tmp_path / "many", rows_per_file=3)
    np.save(tmp_path / "many" / "planes-00002.npy", np.zeros((2, *SHAPE), np.float16))
    with pytest.raises(DataError, match="planes-00002.npy"):
        TriplaneStore.open(tmp_path / "many")
    (tmp_path / "many" / "planes-00001.npy").unlink()
    with pytest.raises(DataError, match="planes-00001.npy"):
        TriplaneStore.open(tmp_path / "many")
