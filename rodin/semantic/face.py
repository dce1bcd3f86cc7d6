"""Prepare a user's portrait the way the training portraits were made.

Training portraits are our own renders: a cartoon head and shoulders on a transparent background, the camera
on the head. An image with transparency is taken as such a render and only composited on white. A photograph
is cropped to a square that puts the face where it sits in the renders, and its background is made white.

The detector is OpenCV's Haar cascade for frontal faces (`haarcascade_frontalface_alt2.xml`): it installs
offline from PyPI beside our CPU torch, its weights ship inside the opencv wheel (nothing to download), it runs
in a fraction of a second on a CPU, and on our renders it finds the cartoon faces too, so the framing can be
measured with the same detector that later frames the photos. OpenCV 5 dropped the cascades, hence `<5`.
(scikit-image's bundled LBP cascade was tried: it found faces on the cat, coffee and noise images.)
Background removal is OpenCV's GrabCut, started from a rectangle around head and shoulders.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from rodin.errors import DataError
from rodin.semantic.pixel_encoder import square_on_white

MIN_SIDE = 32                     # px; smaller images hold no usable face
MAX_SIDE = 8192                   # px per side; larger ones are refused before decoding
DETECT_SIDE = 384                 # px; the long side of the grey image the detector sees
CASCADE = "haarcascade_frontalface_alt2.xml"


@dataclass(frozen=True)
class Framing:
    """Where the detector's face box sits in a square portrait, as fractions of the portrait side."""
    centre_x: float
    centre_y: float
    size: float                   # side of the (square) face box


# Median face box over the first 250 complete subjects of data/small (a face was found on 216 of them), measured by
# `python -m rodin.semantic.face data/small --limit 250`. The portrait camera looks at the head point (0, 0.32, 0),
# which lands at the image centre; the detector's box centres 2.6% of the side above it.
TRAINING_FRAMING = Framing(centre_x=0.501, centre_y=0.474, size=0.447)


@dataclass(frozen=True)
class PreparedPortrait:
    pixels: Tensor                # (3, size, size) floats in [0, 1], background white
    kind: str                     # "render" (already our framing: used as is) or "photo" (face found and cropped)
    faces: int                    # faces detected (0 for renders)
    note: str | None              # a line for the user, e.g. "found 3 faces; used the largest"


class FaceNotFoundError(DataError):
    """A photograph in which no face was found."""


def prepare_portrait(image: Path | str | Image.Image | np.ndarray, *, size: int) -> PreparedPortrait:
    """A render or a photo as the model's portrait input (see the module docstring)."""
    name, rgba = _open(image)
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.min() < 255:
        return PreparedPortrait(square_on_white(rgba, size=size), "render", 0, None)
    rgb = np.asarray(rgba.convert("RGB"))
    faces = detect_faces(rgb)
    if not faces:
        if _looks_like_render(rgb):
            return PreparedPortrait(square_on_white(rgba, size=size), "render", 0, None)
        raise FaceNotFoundError(f"{name}: no face found; give a frontal photo with the face clearly visible, "
                                "or a render with a transparent background")
    notes = [f"found {len(faces)} faces; used the largest"] if len(faces) > 1 else []
    face = max(faces, key=lambda b: b[2] * b[3])
    square = _framed_square(face, TRAINING_FRAMING)
    rgb = _square_crop(rgba, square, size).astype(np.float32) / 255.0
    keep, why = _person_mask(rgba, face, square, size)
    if keep is None:
        notes.append(f"background left as is ({why})")
        keep = np.ones((size, size), np.float32)
    keep = keep[..., None]
    pixels = torch.from_numpy(rgb * keep + (1.0 - keep)).permute(2, 0, 1).contiguous()
    return PreparedPortrait(pixels, "photo", len(faces), "; ".join(notes) or None)


def detect_faces(rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Frontal faces in an (H, W, 3) uint8 image, as (x, y, width, height) boxes in its pixels."""
    scale = DETECT_SIDE / max(rgb.shape[:2])
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    boxes = _cascade().detectMultiScale(grey, scaleFactor=1.05, minNeighbors=3, minSize=(24, 24))
    return [tuple(float(v) / scale for v in box) for box in boxes]


def measure_training_framing(portraits: Iterable[Path]) -> tuple[Framing, int, int]:
    """The median face box of square rendered portraits on white: (framing, portraits with a face, portraits)."""
    boxes, total = [], 0
    for path in portraits:
        total += 1
        image = Image.open(path).convert("RGBA")
        side = image.width
        faces = detect_faces(np.asarray(Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
                                        .convert("RGB")))
        if faces:
            x, y, w, h = max(faces, key=lambda b: b[2] * b[3])
            boxes.append(((x + w / 2) / side, (y + h / 2) / side, w / side))
    if not boxes:
        raise DataError("no face found on any of the portraits; cannot measure the framing")
    framing = Framing(*(round(median(b[i] for b in boxes), 3) for i in range(3)))
    return framing, len(boxes), total


_cascades: list[cv2.CascadeClassifier] = []


def _cascade() -> cv2.CascadeClassifier:
    if not _cascades:
        cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / CASCADE))
        if cascade.empty():
            raise DataError(f"OpenCV's {CASCADE} is missing; install opencv-python-headless>=4.8,<5")
        _cascades.append(cascade)
    return _cascades[0]


def _open(image: Path | str | Image.Image | np.ndarray) -> tuple[str, Image.Image]:
    """(a name for messages, the image as RGBA), or a DataError that says what is wrong with it."""
    if isinstance(image, np.ndarray):
        name, pil = "the portrait array", _from_array(image)
    elif isinstance(image, Image.Image):
        name, pil = "the given image", image
    else:
        path = Path(image)
        name = str(path)
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file, not an image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as opened:
                    _check_size(name, opened.size)
                    pil = ImageOps.exif_transpose(opened)   # phones store the rotation in EXIF
                    pil.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise DataError(f"{path}: image too large to decode safely (at most {MAX_SIDE} px per side)") from None
        except UnidentifiedImageError:
            raise DataError(f"{path}: not an image file (or an image format Pillow cannot read)") from None
        except (OSError, ValueError, SyntaxError) as err:
            raise DataError(f"{path}: unreadable or truncated image ({err})") from None
    _check_size(name, pil.size)
    if pil.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):           # 16-bit or float grey
        pil = _from_array(np.asarray(pil), name=name)
    try:
        return name, pil.convert("RGBA")
    except ValueError as err:
        raise DataError(f"{name}: unsupported colour mode {pil.mode} ({err})") from None


def _check_size(name: str, size: tuple[int, int]) -> None:
    if min(size) < MIN_SIDE:
        raise DataError(f"{name}: image is {size[0]}x{size[1]} px; give at least {MIN_SIDE} px per side")
    if max(size) > MAX_SIDE:
        raise DataError(f"{name}: image is {size[0]}x{size[1]} px; give at most {MAX_SIDE} px per side")


def _from_array(array: np.ndarray, *, name: str = "the portrait array") -> Image.Image:
    """(H, W), (H, W, 1|3|4) or (1|3|4, H, W): uint8, 16-bit integers, or floats in [0, 1]."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise DataError(f"{name}: shape {array.shape} is not an image; give (H, W), (H, W, 3) or (H, W, 4)")
    _check_size(name, (array.shape[1], array.shape[0]))
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):                            # floats in [0, 1]
        if not np.isfinite(array).all():
            raise DataError(f"{name}: holds NaN or infinity")
        array = array * 255.0
    elif array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max() > 255):
        array = array / 257.0                                               # 16-bit range to 8 bits
    elif not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{name}: pixel type {array.dtype} is not supported")
    array = np.clip(np.rint(array), 0, 255)
    return Image.fromarray(np.ascontiguousarray(array.astype(np.uint8)))


def _looks_like_render(rgb: np.ndarray) -> bool:
    """A portrait already on white: top edge and the upper halves of the sides near-white, something inside."""
    h, w = rgb.shape[:2]
    band = max(1, min(h, w) // 32)
    border = np.concatenate([rgb[:band].reshape(-1, 3), rgb[: h // 2, :band].reshape(-1, 3),
                             rgb[: h // 2, -band:].reshape(-1, 3)])
    white = (rgb.min(axis=-1) >= 235)
    return bool((border.min(axis=-1) >= 235).mean() > 0.95 and border.std() < 8 and white.mean() < 0.9)


def _framed_square(face: tuple[float, float, float, float], framing: Framing) -> tuple[float, float, float]:
    """(left, top, side) of the square that frames a face box as `framing` says, in image pixels."""
    x, y, w, h = face
    side = w / framing.size
    return x + w / 2 - framing.centre_x * side, y + h / 2 - framing.centre_y * side, side


def _square_crop(rgba: Image.Image, square: tuple[float, float, float], size: int) -> np.ndarray:
    """A square of an image as (size, size, 3) uint8 on white, white too where the square leaves the image."""
    left, top, side = square
    crop = rgba.crop(tuple(round(v) for v in (left, top, left + side, top + side)))  # transparent outside
    crop = Image.alpha_composite(Image.new("RGBA", crop.size, "white"), crop).convert("RGB")
    resample = Image.Resampling.BOX if crop.width >= size else Image.Resampling.BICUBIC
    return np.asarray(crop.resize((size, size), resample))


def _person_mask(rgba: Image.Image, face: tuple[float, float, float, float], square: tuple[float, float, float],
                 size: int) -> tuple[np.ndarray | None, str]:
    """(size, size) floats, 1 on the person in `square`, by GrabCut; or (None, why not).

    GrabCut sees the square with a margin of photo around it, so that it has background to learn from. It starts
    from head and shoulders: a box around the head over a wider one from the shoulders down (maybe the person),
    the middle of the face (surely the person), the rest (surely background).
    """
    left, top, side = square
    margin = 0.25 * side
    work = min(max(192, round(1.5 * size)), 512)              # px; GrabCut's cost grows with the area
    context = _square_crop(rgba, (left - margin, top - margin, side + 2 * margin), work)
    scale = work / (side + 2 * margin)
    x, y, w, h = (face[0] - left + margin) * scale, (face[1] - top + margin) * scale, face[2] * scale, face[3] * scale
    cx, cy = x + w / 2, y + h / 2
    mask = np.full((work, work), cv2.GC_BGD, np.uint8)
    for x0, y0, x1, y1, label in [(cx - 1.1 * w, cy - 1.2 * h, cx + 1.1 * w, work, cv2.GC_PR_FGD),    # head, neck
                                  (cx - 2.5 * w, cy + 1.0 * h, cx + 2.5 * w, work, cv2.GC_PR_FGD),    # shoulders
                                  (x + 0.25 * w, y + 0.2 * h, x + 0.75 * w, y + 0.9 * h, cv2.GC_FGD)]:  # face
        mask[max(0, round(y0)):round(y1), max(0, round(x0)):round(x1)] = label
    try:
        cv2.grabCut(context, mask, None, np.zeros((1, 65)), np.zeros((1, 65)), 5, cv2.GC_INIT_WITH_MASK)
    except cv2.error as err:
        return None, f"GrabCut failed: {str(err).strip().splitlines()[-1]}"
    inner = slice(round(margin * scale), round((margin + side) * scale))
    keep = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))[inner, inner].astype(np.float32)
    if keep.sum() < 0.5 * w * h:                                 # little more than the face middle it was given
        return None, "GrabCut kept almost nothing"
    return cv2.resize(keep, (size, size), interpolation=cv2.INTER_AREA), ""


if __name__ == "__main__":           # python -m rodin.semantic.face DATA [--limit N]: measure TRAINING_FRAMING
    data = Path(sys.argv[1])
    limit = int(sys.argv[sys.argv.index("--limit") + 1]) if "--limit" in sys.argv else None
    subjects = sorted(p for p in data.iterdir() if (p / ".complete").exists() and (p / "portrait.png").exists())
    framing, found, total = measure_training_framing(s / "portrait.png" for s in subjects[:limit])
    print(f"{framing} (face found on {found} of {total} portraits)")
