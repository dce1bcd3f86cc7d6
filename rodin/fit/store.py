"""The tri-plane store: every fitted subject of a dataset in memory-mapped arrays.

Diffusion training reads planes by row straight from the mapped files (N, 3, C, H, W), so a batch
costs a slice of a file, not a file open per subject. A store of up to `rows_per_file` subjects is one
`planes.npy` (as stores always were); a bigger one is cut into fixed-size files `planes-00000.npy`,
`planes-00001.npy`, … of `rows_per_file` rows each, so 100K subjects (1.3 TB in half precision) are
files a file system, a copy or a sync can handle, and a reader maps only the files its rows live in.
`subjects.json` names the rows, says which are done, and records the layout; `stats.safetensors` holds
per-channel mean and std of the fitted training subjects, the normalisation that travels with the
diffusion models.
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
DTYPES = {"float16": np.float16, "float32": np.float32}
FILE_BYTES = 2 << 30    # automatic layout: files of at most this size (2 GiB: ~170 paper-size subjects)


@dataclass
class PlaneStats:
    mean: torch.Tensor   # (C,)
    std: torch.Tensor    # (C,)

    def normalise(self, planes: torch.Tensor) -> torch.Tensor:
        return (planes - self.mean[:, None, None]) / self.std[:, None, None]

    def denormalise(self, planes: torch.Tensor) -> torch.Tensor:
        return planes * self.std[:, None, None] + self.mean[:, None, None]


def file_name(index: int | None) -> str:
    return PLANES if index is None else f"planes-{index:05d}.npy"


def file_rows(rows: int, rows_per_file: int | None) -> list[tuple[int | None, int]]:
    """(file index, rows in it) of every file of a store; index None for the single-file layout."""
    if rows_per_file is None:
        return [(None, rows)]
    return [(i, min(rows_per_file, rows - i * rows_per_file)) for i in range(-(-rows // rows_per_file))]


class PlaneFiles:
    """The rows of a store as one array, whatever the number of files behind it.

    Indexing with an int, a list of rows or a slice reads those rows (in that order) from the files
    they live in; assigning writes them. Files are mapped when first touched, and a pickled copy (a
    DataLoader worker) maps its own.
    """

    def __init__(self, root: Path, rows: int, shape: tuple[int, ...], rows_per_file: int | None,
                 mode: str = "r") -> None:
        self.root, self.rows, self.row_shape, self.mode = root, rows, tuple(shape), mode
        self.rows_per_file = rows_per_file
        self.files = dict(file_rows(rows, rows_per_file))
        self._maps: dict[int | None, np.memmap] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *self.row_shape)

    @property
    def dtype(self) -> np.dtype:
        return self._map(next(iter(self.files))).dtype

    def __len__(self) -> int:
        return self.rows

    def _map(self, index: int | None) -> np.memmap:
        if index not in self._maps:
            path = self.root / file_name(index)
            try:
                array = np.load(path, mmap_mode=self.mode)
            except (OSError, ValueError) as err:
                raise DataError(f"{path}: unreadable ({err})") from None
            expected = self.files[index]
            if tuple(array.shape) != (expected, *self.row_shape):
                raise DataError(f"{path}: holds planes of shape {tuple(array.shape)}, the index says "
                                f"{(expected, *self.row_shape)}")
            self._maps[index] = array
        return self._maps[index]

    def check(self) -> None:
        """Map every file once, so that a missing or wrong-sized file shows when the store is opened."""
        for index in self.files:
            self._map(index)

    def _locate(self, key) -> tuple[list[int], bool]:
        if isinstance(key, (int, np.integer)):
            rows, single = [int(key)], True
        elif isinstance(key, slice):
            rows, single = list(range(self.rows)[key]), False
        else:
            rows, single = [int(r) for r in np.asarray(key).reshape(-1)], False
        for r in rows:
            if not -self.rows <= r < self.rows:
                raise IndexError(f"row {r} out of range for a store of {self.rows} rows")
        return [r % self.rows for r in rows], single

    def _groups(self, rows: list[int]) -> dict[int | None, tuple[list[int], list[int]]]:
        """Per file: positions in `rows` and the rows local to that file."""
        groups: dict[int | None, tuple[list[int], list[int]]] = {}
        for position, row in enumerate(rows):
            index, local = (None, row) if self.rows_per_file is None else divmod(row, self.rows_per_file)
            positions, locals_ = groups.setdefault(index, ([], []))
            positions.append(position)
            locals_.append(local)
        return groups

    def __getitem__(self, key) -> np.ndarray:
        rows, single = self._locate(key)
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        for index, (positions, local) in self._groups(rows).items():
            out[positions] = self._map(index)[local]
        return out[0] if single else out

    def __setitem__(self, key, values) -> None:
        rows, single = self._locate(key)
        values = np.asarray(values, dtype=self.dtype)
        if single:
            values = values[None]
        for index, (positions, local) in self._groups(rows).items():
            self._map(index)[local] = values[positions]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def flush(self) -> None:
        for array in self._maps.values():
            array.flush()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}


def default_rows_per_file(rows: int, row_bytes: int) -> int | None:
    """None (one file) when the store fits in FILE_BYTES, else as many rows as fit in that."""
    per_file = max(1, FILE_BYTES // max(1, row_bytes))
    return None if rows <= per_file else per_file


class TriplaneStore:
    """Rows of fitted tri-planes with subject ids, a done flag and per-subject notes."""

    def __init__(self, root: Path, ids: list[str], splits: list[str], done: list[bool],
                 failed: dict[str, str], planes: PlaneFiles) -> None:
        self.root = root
        self.ids = ids
        self.splits = splits
        self.done = done
        self.failed = failed
        self.planes = planes

    @classmethod
    def create(cls, root: Path | str, ids: list[str], splits: list[str], shape: tuple[int, int, int, int], *,
               dtype: str = "float16", rows_per_file: int | None = None) -> TriplaneStore:
        """A new store, or the existing one when its ids and plane shape match (resume).

        `dtype` is the storage precision (float16 halves the disk; planes are read as float32);
        `rows_per_file` cuts the rows into files of that many (default: files of up to 2 GiB).
        """
        root = Path(root)
        if dtype not in DTYPES:
            raise DataError(f"tri-plane storage must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if rows_per_file is not None and rows_per_file < 1:
            raise DataError(f"rows per store file must be at least 1, got {rows_per_file}")
        if (root / INDEX).exists():
            store = cls.open(root, mode="r+")
            if store.ids == ids and tuple(store.planes.shape[1:]) == tuple(shape):
                return store
            raise DataError(f"{root}: holds a tri-plane store for other subjects or sizes; "
                            "choose another --out or delete it")
        root.mkdir(parents=True, exist_ok=True)
        kind = np.dtype(DTYPES[dtype])
        if rows_per_file is None:
            rows_per_file = default_rows_per_file(len(ids), int(np.prod(shape)) * kind.itemsize)
        elif rows_per_file >= len(ids):
            rows_per_file = None
        for index, count in file_rows(len(ids), rows_per_file):
            tmp = root / f".{file_name(index)}.tmp"
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=kind, shape=(count, *shape))
            array.flush()
            del array
            tmp.replace(root / file_name(index))
        store = cls(root, ids, splits, [False] * len(ids), {},
                    PlaneFiles(root, len(ids), shape, rows_per_file, mode="r+"))
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
            rows_per_file = index.get("rows_per_file")
            shape = index.get("shape")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{index_path}: malformed tri-plane index ({err})") from None
        if shape is None:       # an index written before the shape was recorded: one file says it
            try:
                shape = np.load(root / PLANES, mmap_mode="r").shape[1:]
            except (OSError, ValueError) as err:
                raise DataError(f"{root / PLANES}: unreadable ({err})") from None
        planes = PlaneFiles(root, len(ids), tuple(shape), rows_per_file, mode=mode)
        planes.check()
        return cls(root, ids, splits, done, failed, planes)

    def write_index(self) -> None:
        write_json(self.root / INDEX, {"ids": self.ids, "splits": self.splits, "done": self.done,
                                       "failed": self.failed, "shape": list(self.planes.shape[1:]),
                                       "dtype": str(self.planes.dtype), "rows_per_file": self.planes.rows_per_file})

    def put(self, rows: list[int], planes: torch.Tensor) -> None:
        """Write finished rows, flush them, then mark them done (a crash in between redoes them)."""
        self.planes[rows] = planes.detach().cpu().float().numpy()
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
