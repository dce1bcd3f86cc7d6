"""Sharded fitting: the frozen-decoder stage split by subject across processes or machines.

The frozen stage fits its subjects in batches of `batch_subjects`; a batch is fitted from a generator
seeded by its first row, so what a subject ends up with depends on its batch and nothing else. Shards
therefore take whole batches (batch k goes to shard k mod N), and the tri-planes are the same whether
the stage ran in one process or in N. Each shard writes its own store under RUN/shards/I-of-N/
(restartable: finished batches are kept), and `merge_shards` copies them into RUN/triplanes and
computes the statistics.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rodin.errors import ConfigError, DataError
from rodin.fit.store import TriplaneStore
from rodin.io import write_json

SHARDS = "shards"
JOINT_SUBJECTS = "joint_subjects.json"
DONE = "done.json"
MERGE_LOCK = ".merge.lock"


@dataclass(frozen=True)
class Shard:
    index: int   # 0-based
    count: int

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """"I/N": shard I (0-based) of N."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ConfigError(f"--shard expects I/N (shard I of N, counted from 0), got {text!r}")
        index, count = int(match[1]), int(match[2])
        if count < 1 or index >= count:
            raise ConfigError(f"--shard {text}: need 0 <= I < N")
        return cls(index, count)

    @classmethod
    def from_environment(cls) -> Shard | None:
        """Rank and world size when launched by `accelerate launch` or torchrun, else None."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        from accelerate import PartialState

        # Fitting runs on the CPU and needs only the rank: without cpu=True accelerate, finding no GPU,
        # would see one process and every rank would fit everything.
        state = PartialState(cpu=True)
        return cls(state.process_index, state.num_processes)


def frozen_batches(ids: list[str], joint: set[str], batch_subjects: int) -> list[list[int]]:
    """Rows of the frozen stage, in fitting batches: every subject the joint stage did not fit."""
    rows = [i for i, sid in enumerate(ids) if sid not in joint]
    return [rows[i:i + batch_subjects] for i in range(0, len(rows), batch_subjects)]


def joint_subjects(run: Path) -> set[str]:
    path = run / JOINT_SUBJECTS
    return set(json.loads(path.read_text())) if path.is_file() else set()


def shard_root(run: Path, shard: Shard) -> Path:
    return run / SHARDS / shard.name


def mark_shard_done(run: Path, shard: Shard, timings: dict) -> None:
    write_json(shard_root(run, shard) / DONE, timings)


def shards_complete(run: Path, count: int) -> bool:
    return all((shard_root(run, Shard(i, count)) / DONE).is_file() for i in range(count))


def try_merge(run: Path, count: int, *, log: Callable[[str], None]) -> dict | None:
    """Merge if every shard is done and no other process is merging (the last shard to finish does it)."""
    if not shards_complete(run, count):
        return None
    lock = run / SHARDS / MERGE_LOCK
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return None
    try:
        return merge_shards(run, log=log)
    finally:
        lock.unlink(missing_ok=True)


def merge_shards(run: Path, *, log: Callable[[str], None] = print, chunk: int = 256) -> dict:
    """Copy every shard's fitted rows into RUN/triplanes, merge the metrics, compute the statistics.

    Idempotent: merging again rewrites the same rows. The shard folders are kept (delete RUN/shards
    once the merge is checked).
    """
    from rodin.fit.run import summarise  # here: rodin.fit.run imports this module

    run = Path(run)
    found = sorted((run / SHARDS).glob("*-of-*")) if (run / SHARDS).is_dir() else []
    if not found:
        raise DataError(f"{run}: no shards to merge (run `rodin fit DATA --out {run} --shard I/N` first)")
    counts = {int(p.name.split("-of-")[1]) for p in found}
    if len(counts) != 1:
        raise DataError(f"{run / SHARDS}: shards of different counts {sorted(counts)}; keep one set")
    count = counts.pop()
    missing = [Shard(i, count).name for i in range(count) if not (shard_root(run, Shard(i, count)) / DONE).is_file()]
    if missing:
        raise DataError(f"{run}: shards {', '.join(missing)} are not finished; run them, then merge")
    main = TriplaneStore.open(run / "triplanes", mode="r+")
    metrics_path = run / "subject_metrics.json"
    subject_metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    timings = {"frozen_s": 0.0, "frozen_subjects": 0, "eval_s": 0.0}
    for i in range(count):
        root = shard_root(run, Shard(i, count))
        part = TriplaneStore.open(root / "triplanes")
        done = [r for r, d in enumerate(part.done) if d]
        for start in range(0, len(done), chunk):
            rows = done[start:start + chunk]
            main.put([main.row(part.ids[r]) for r in rows], part.get(rows))
        for sid, message in part.failed.items():
            main.mark_failed(main.row(sid), message)
        shard_metrics = root / "subject_metrics.json"
        if shard_metrics.is_file():
            subject_metrics.update(json.loads(shard_metrics.read_text()))
        for key, value in json.loads((root / DONE).read_text()).items():
            if key in timings:
                timings[key] += value
        log(f"merged shard {i + 1}/{count}: {len(done)} subjects")
    write_json(metrics_path, subject_metrics)
    stats = main.compute_stats()
    metrics = summarise(subject_metrics, main, timings)
    metrics["stats_channels"] = int(stats.mean.numel())
    metrics["shards"] = count
    write_json(run / "metrics.json", metrics)
    return metrics
