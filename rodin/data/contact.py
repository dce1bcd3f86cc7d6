"""Contact sheets: a grid image of subjects (portrait + a few views, on white, captions below).

Used by `rodin data show`. Reads any NeRF-synthetic subject folder (transforms.json + RGBA images);
portrait.png and attributes.json are shown when present.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rodin.errors import DataError
from rodin.io import write_png


def _on_white(image: Image.Image) -> Image.Image:
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    return Image.fromarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))


def subject_folders(source: Path | str | Sequence[Path | str]) -> list[Path]:
    """Subject folders from a dataset folder (its index.json or subject_* folders), one subject
    folder, or a list of subject folders."""
    if not isinstance(source, (str, Path)):
        return [Path(s) for s in source]
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if (path / "transforms.json").is_file():
        return [path]
    index = path / "index.json"
    if index.is_file():
        try:
            entries = json.loads(index.read_text())["subjects"]
            return [path / e["id"] for e in entries]
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{index}: not a dataset index ({err})") from err
    found = sorted(p.parent for p in path.glob("*/transforms.json"))
    if not found:
        raise DataError(f"{path}: neither a subject folder (transforms.json) nor a dataset (index.json)")
    return found


def _frames(folder: Path) -> list[Path]:
    try:
        meta = json.loads((folder / "transforms.json").read_text())
        frames = meta["frames"]
        return [folder / f["file_path"] if Path(f["file_path"]).suffix else folder / (f["file_path"] + ".png")
                for f in frames]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{folder}: unreadable transforms.json ({err})") from err


def _caption(folder: Path) -> str:
    try:
        return str(json.loads((folder / "attributes.json").read_text()).get("caption", ""))
    except (OSError, ValueError):
        return ""


def contact_sheet(source: Path | str | Sequence[Path | str], out_png: Path | str, *, max_subjects: int = 16,
                  views: int = 4, tile: int = 96, columns: int = 4, captions: bool = True) -> Path:
    """Write a grid of subjects to `out_png`: per subject, the portrait (2x2 tiles) beside `views`
    views (evenly picked from its frames), composited on white, with its caption underneath."""
    folders = subject_folders(source)[:max(1, max_subjects)]
    if not folders:
        raise DataError("no subjects to show")
    font = ImageFont.load_default()
    side = int(np.ceil(np.sqrt(views))) if views > 0 else 0   # views laid out side x side beside the portrait
    view_tile = (2 * tile) // side if side else 0
    cell_w = 2 * tile + side * view_tile + 8
    text_lines = 3 if captions else 0
    line_h = 12
    cell_h = 2 * tile + text_lines * line_h + 10
    rows = (len(folders) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    wrap = max(20, cell_w // 6)
    for k, folder in enumerate(folders):
        x0, y0 = (k % columns) * cell_w + 4, (k // columns) * cell_h + 4
        frames = _frames(folder)
        portrait = folder / "portrait.png"
        first = portrait if portrait.is_file() else (frames[0] if frames else None)
        if first is None:
            raise DataError(f"{folder}: no images")
        try:
            sheet.paste(_on_white(Image.open(first)).resize((2 * tile, 2 * tile), Image.BILINEAR), (x0, y0))
            picks = ([frames[int(i)] for i in np.linspace(0, len(frames) - 1, views).round()]
                     if views and frames else [])
            for j, path in enumerate(picks[:side * side]):
                img = _on_white(Image.open(path)).resize((view_tile, view_tile), Image.BILINEAR)
                sheet.paste(img, (x0 + 2 * tile + (j % side) * view_tile, y0 + (j // side) * view_tile))
        except OSError as err:
            raise DataError(f"{folder}: unreadable image ({err})") from err
        if captions:
            lines = textwrap.wrap(f"{folder.name}: {_caption(folder)}", wrap)[:text_lines]
            for i, line in enumerate(lines):
                draw.text((x0, y0 + 2 * tile + 3 + i * line_h), line, fill=(40, 40, 40), font=font)
    out_png = Path(out_png)
    write_png(out_png, np.asarray(sheet))
    return out_png


__all__ = ["contact_sheet", "subject_folders"]
