"""Checks on a file a browser uploaded, before any model sees it.

gradio already refuses bodies over `max_file_size`; the same limits are checked here so that the rules hold
for every caller of the studio (the API, tests) and so that each refusal is one line a person can act on.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rodin.errors import DataError
from rodin.semantic.face import MAX_SIDE, MIN_SIDE

# What the portrait loaders read; anything else (SVG, PDF, video) is refused up front.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


class UploadError(DataError):
    """An uploaded file that is missing, too large or not an image."""


def max_upload_bytes(megabytes: float) -> int:
    """The byte limit of `megabytes` (a positive number), as gradio's `max_file_size` takes it."""
    if not megabytes > 0:
        raise UploadError(f"the upload limit must be a positive number of megabytes, got {megabytes}")
    return int(megabytes * 1024 * 1024)


def check_upload(path: Path | str | None, *, max_bytes: int) -> Path:
    """The path of a readable image of sane size; an UploadError naming the file (not its server path)."""
    if path is None or str(path) == "":
        raise UploadError("no portrait uploaded; choose an image file first")
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise UploadError(f"{name}: the uploaded file is gone; upload it again")
    size = path.stat().st_size
    if size == 0:
        raise UploadError(f"{name}: empty file, not an image")
    if size > max_bytes:
        raise UploadError(f"{name}: {size / 2**20:.1f} MB is over the upload limit of {max_bytes / 2**20:.1f} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                kind, (width, height) = image.format, image.size
                image.verify()                      # reads the whole file: catches truncation and bad checksums
    except UnidentifiedImageError:
        raise UploadError(f"{name}: not an image; upload a PNG, JPEG or WebP portrait") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{name}: image too large to decode safely (at most {MAX_SIDE} px per side)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise UploadError(f"{name}: damaged or truncated image ({err})") from None
    if kind not in IMAGE_FORMATS:
        raise UploadError(f"{name}: {kind} images are not read here; upload a PNG, JPEG or WebP portrait")
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
        raise UploadError(f"{name}: image is {width}x{height} px; give {MIN_SIDE} to {MAX_SIDE} px per side")
    return path
