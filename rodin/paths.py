"""Where the shipped models live: `models/` at the repository root, or RODIN_MODELS."""

from __future__ import annotations

import os
from pathlib import Path


def shipped_model(name: str) -> Path:
    root = os.environ.get("RODIN_MODELS")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / "models"
    return base / name


def example_file(name: str) -> Path:
    """A bundled example input (docs/examples/): the demo's portrait and photograph."""
    return Path(__file__).resolve().parents[1] / "docs" / "examples" / name
