"""Where the shipped models live: `models/` at the repository root, or RODIN_MODELS."""

from __future__ import annotations

import os
from pathlib import Path


def shipped_model(name: str) -> Path:
    root = os.environ.get("RODIN_MODELS")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / "models"
    return base / name


# The shipped models: `small` (portrait or seed; its base trained longest) and `small-text` (the semantic
# stage: prompts, photos and edits; its base trained on fewer subjects so far). See their model cards.
DEFAULT_MODEL = "small"
TEXT_MODEL = "small-text"


def default_model(*, text: bool = False) -> Path:
    """The shipped model a command uses when none is given: the text-capable one when words are involved."""
    return shipped_model(TEXT_MODEL if text else DEFAULT_MODEL)


def example_file(name: str) -> Path:
    """A bundled example input (docs/examples/): the demo's portrait and photograph."""
    return Path(__file__).resolve().parents[1] / "docs" / "examples" / name
