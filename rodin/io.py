"""Files are written whole or not at all: write to a temporary sibling, then rename."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_atomic(path: Path | str, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path | str, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def remove_tree(path: Path | str) -> None:
    """Delete a folder by renaming it aside first: a kill halfway through leaves it whole or gone,
    never half-deleted (a half-deleted checkpoint would look resumable and fail)."""
    path = Path(path)
    trash = path.with_name(f".{path.name}.trash")
    shutil.rmtree(trash, ignore_errors=True)
    if path.exists():
        path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def copy_tree(source: Path | str, dest: Path | str) -> None:
    """Copy a folder into place whole: copied beside `dest`, then swapped in by renames."""
    source, dest = Path(source), Path(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    remove_tree(dest)
    tmp.rename(dest)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (H, W, C) to uint8 with round-half-up, deterministic."""
    return np.clip(np.floor(np.asarray(image, dtype=np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an (H, W, 3|4) uint8 or float image as PNG bytes (no timestamps: byte-stable)."""
    if image.dtype != np.uint8:
        image = to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def write_png(path: Path | str, image: np.ndarray) -> None:
    write_atomic(path, png_bytes(image))
