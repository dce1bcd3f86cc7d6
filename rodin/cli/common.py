"""What every CLI verb shares: how failures reach the user, and progress bars."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

import typer
from tqdm import tqdm

from rodin.errors import RodinError

T = TypeVar("T")


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and a non-zero exit; no traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def progress(
    items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it"
) -> Iterator[T]:
    """A progress bar on stderr that stays quiet when stderr is not a terminal and work is short."""
    yield from tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                    disable=None, leave=False)


__all__ = ["RodinError", "fail", "progress"]
