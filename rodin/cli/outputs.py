"""Output folders of CLI verbs: never inside their input, and not left half-made by a failed start.

A verb that fails on bad input before it has made anything worth keeping removes the folder it
created, so a rerun starts clean and nobody mistakes the remains for a result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rodin.errors import DataError
from rodin.io import remove_tree


def refuse_overlap(out: Path, source: Path, *, what: str) -> None:
    """Refuse an output folder that is the input or lies inside it (its files would join the input's)."""
    try:
        out_r, src_r = Path(out).resolve(), Path(source).resolve()
    except (OSError, RuntimeError):
        return
    if out_r == src_r or src_r in out_r.parents:
        raise DataError(f"{out}: the output folder is inside the {what} {source}; write somewhere else")


def refuse_overwriting(out: Path, source: Path, names: list[str], *, what: str) -> None:
    """Refuse an output folder where one of the files a verb writes would replace its input file."""
    try:
        src_r = Path(source).resolve()
        targets = {(Path(out) / n).resolve() for n in names}
    except (OSError, RuntimeError):
        return
    if src_r in targets:
        raise DataError(f"{out}: writing here would replace the {what} {source}; write somewhere else")


@contextmanager
def discard_on_failure(out: Path, *, keep: Callable[[Path], bool] = lambda out: False) -> Iterator[None]:
    """Remove `out` if this block created it and fails, unless `keep(out)` says it holds progress."""
    existed = Path(out).exists()
    try:
        yield
    except Exception:
        if not existed and Path(out).is_dir() and not keep(Path(out)):
            remove_tree(out)
        raise
