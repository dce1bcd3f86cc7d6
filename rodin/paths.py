"""Where the shipped models live: `models/` at the repository root, or RODIN_MODELS."""

from __future__ import annotations

import os
from pathlib import Path


def shipped_model(name: str) -> Path:
    root = os.environ.get("RODIN_MODELS")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / "models"
    return base / name


# The shipped models (see their model cards): `small-1k`, every stage, the default for every input since it
# measured best (sample FID/KID, attribute distances, held-out denoising loss, latency); `small-text` and
# `small`, earlier models kept for comparison. The two names stay apart so that a text-only model can
# differ from the image one again.
DEFAULT_MODEL = "small-1k"
TEXT_MODEL = "small-1k"


def default_model(*, text: bool = False) -> Path:
    """The shipped model a command uses when none is given: the text-capable one when words are involved."""
    return shipped_model(TEXT_MODEL if text else DEFAULT_MODEL)


def example_file(name: str) -> Path:
    """A bundled example input (docs/examples/): the demo's portrait and photograph."""
    return Path(__file__).resolve().parents[1] / "docs" / "examples" / name
