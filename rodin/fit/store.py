"""The tri-plane store: every fitted subject of a dataset in one memory-mapped array.

Diffusion training reads planes by index straight from `planes.npy` (N, 3, C, H, W), float16, so
a batch costs a slice of a mapped file, not a file open per subject. `subjects.json` names the rows
and says which are done; `stats.safetensors` holds per-channel mean and std of the fitted training
subjects, the normalisation that travels with the diffusion models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from rodin.errors import DataError
from rodin.io import write_atomic, write_json

PLANES = "planes.npy"
INDEX = "subjects.json"
STATS = "stats.safetensors"


@dataclass
class PlaneStats:
    mean: torch.Tensor   # (C,)
    std: torch.Tensor    # (C,)

    def normalise(self, planes: torch.Tensor) -> torch.Tensor:
        return (planes - self.mean[:, None, None]) / self.std[:, None, None]

    def denormalise(self, planes: torch.Tensor) -> torch.Tensor:
        return planes * self.std[:, None, None] + self.mean[:, None, None]


class TriplaneStore:
    """Rows of fitted tri-planes with subject ids, a done flag and per-subject notes."""

    def __init__(self, root: Path, ids: list[str], splits: list[str], done: list[bool],
                 failed: dict[str, str], planes: np.memmap) -> None:
        self.root = root
        self.ids = ids
        self.splits = splits
        self.done = done
        self.failed = failed
        self.planes = planes

    @classmethod
    def create(cls, root: Path | str, ids: list[str], splits: list[str], shape: tuple[int, int, int, int]
               ) -> TriplaneStore:
        """A new store, or the existing one when its ids and plane shape match (resume)."""
        root = Path(root)
        if (root / INDEX).exists():
            store = cls.open(root, mode="r+")
            if store.ids == ids and tuple(store.planes.shape[1:]) == tuple(shape):
                return store
            raise DataError(f"{root}: holds a tri-plane store for other subjects or sizes; "
                            "choose another --out or delete it")
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{PLANES}.tmp"
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(ids), *shape))
        array.flush()
        del array
        tmp.replace(root / PLANES)
        store = cls(root, ids, splits, [False] * len(ids), {},
                    np.load(root / PLANES, mmap_mode="r+"))
        store.write_index()
        return store

    @classmethod
    def open(cls, root: Path | str, mode: str = "r") -> TriplaneStore:
        root = Path(root)
        index_path = root / INDEX
        if not index_path.is_file():
            raise DataError(f"{root}: not a tri-plane store (no {INDEX}); run `rodin fit` first")
        try:
            index = json.loads(index_path.read_text())
            ids, splits, done = index["ids"], index["splits"], index["done"]
            failed = index.get("failed", {})
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{index_path}: malformed tri-plane index ({err})") from None
        try:
            planes = np.load(root / PLANES, mmap_mode=mode)
        except (OSError, ValueError) as err:
            raise DataError(f"{root / PLANES}: unreadable ({err})") from None
        if planes.shape[0] != len(ids):
            raise DataError(f"{root}: {planes.shape[0]} rows of planes for {len(ids)} subject ids")
        return cls(root, ids, splits, done, failed, planes)

    def write_index(self) -> None:
        write_json(self.root / INDEX, {"ids": self.ids, "splits": self.splits, "done": self.done,
                                       "failed": self.failed, "shape": list(self.planes.shape[1:]),
                                       "dtype": "float16"})

    def put(self, rows: list[int], planes: torch.Tensor) -> None:
        """Write finished rows, flush them, then mark them done (a crash in between redoes them)."""
        self.planes[rows] = planes.detach().cpu().numpy().astype(np.float16)
        self.planes.flush()
        for row in rows:
            self.done[row] = True
            self.failed.pop(self.ids[row], None)
        self.write_index()

    def mark_failed(self, row: int, message: str) -> None:
        self.failed[self.ids[row]] = message
        self.write_index()

    def get(self, rows: list[int] | int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.planes[rows], dtype=np.float32))

    def row(self, subject_id: str) -> int:
        try:
            return self.ids.index(subject_id)
        except ValueError:
            raise DataError(f"{self.root}: no subject {subject_id!r} in this store") from None

    def compute_stats(self, split: str = "train") -> PlaneStats:
        """Per-channel statistics over done rows of `split` (all done rows if none), in one pass."""
        rows = [i for i, (d, s) in enumerate(zip(self.done, self.splits)) if d and s == split]
        rows = rows or [i for i, d in enumerate(self.done) if d]
        if not rows:
            raise DataError(f"{self.root}: no fitted subjects to compute statistics from")
        channels = self.planes.shape[2]
        total = np.zeros(channels, np.float64)
        total_sq = np.zeros(channels, np.float64)
        count = 0
        for start in range(0, len(rows), 64):
            block = np.asarray(self.planes[rows[start:start + 64]], dtype=np.float64)
            total += block.sum(axis=(0, 1, 3, 4))
            total_sq += (block ** 2).sum(axis=(0, 1, 3, 4))
            count += block.shape[0] * block.shape[1] * block.shape[3] * block.shape[4]
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
        stats = PlaneStats(torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
        write_atomic(self.root / STATS, save({"mean": stats.mean, "std": stats.std}))
        return stats

    def stats(self) -> PlaneStats:
        path = self.root / STATS
        if not path.is_file():
            return self.compute_stats()
        tensors = load_file(str(path))
        return PlaneStats(tensors["mean"], tensors["std"])
