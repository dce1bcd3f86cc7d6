"""Preparing a user's portrait: renders used as is, photos cropped to the training framing on white."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as samples

from rodin.errors import DataError
from rodin.semantic import face
from rodin.semantic.face import (
    TRAINING_FRAMING,
    FaceNotFoundError,
    detect_faces,
    measure_training_framing,
    prepare_portrait,
)
from rodin.semantic.pixel_encoder import square_on_white


def _uint8(pixels: torch.Tensor) -> np.ndarray:
    return (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _framing_of(rgb: np.ndarray) -> tuple[float, float, float]:
    faces = detect_faces(rgb)
    assert len(faces) == 1, faces
    x, y, w, h = faces[0]
    side = rgb.shape[0]
    return (x + w / 2) / side, (y + h / 2) / side, w / side


def test_astronaut_photo_is_cropped_to_the_training_framing_on_white(tmp_path):
    path = tmp_path / "astronaut.png"
    Image.fromarray(samples.astronaut()).save(path)
    prepared = prepare_portrait(path, size=128)
    assert (prepared.kind, prepared.faces, prepared.note) == ("photo", 1, None)
    assert prepared.pixels.shape == (3, 128, 128) and prepared.pixels.dtype == torch.float32
    out = _uint8(prepared.pixels)
    # the detector, run again on the output, finds the face where it sits in the training renders
    cx, cy, s = _framing_of(out)
    assert abs(cx - TRAINING_FRAMING.centre_x) < 0.04 and abs(cy - TRAINING_FRAMING.centre_y) < 0.04
    assert abs(s / TRAINING_FRAMING.size - 1) < 0.15
    # the photo's grey-blue backdrop is gone from the corners above the shoulders; the face stays
    for corner in (out[:12, :12], out[:12, -12:]):
        assert corner.min() >= 240, corner.mean()
    face_middle = out[round(cy * 128) - 8:round(cy * 128) + 8, round(cx * 128) - 8:round(cx * 128) + 8]
    assert face_middle.mean() < 220 and face_middle[..., 0].mean() > face_middle[..., 2].mean() + 20  # skin


def test_photo_rotated_by_exif_is_turned_upright(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6                          # "rotate 90° clockwise to display", as phones write it
    Image.fromarray(samples.astronaut()).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    prepared = prepare_portrait(path, size=64)
    assert (prepared.kind, prepared.faces) == ("photo", 1)


def test_of_several_faces_the_largest_is_used(tmp_path):
    astronaut = Image.fromarray(samples.astronaut())
    collage = Image.new("RGB", (520, 320), (90, 110, 90))
    collage.paste(astronaut.convert("L").resize((200, 200)), (310, 60))   # small copy in grey
    collage.paste(astronaut.resize((300, 300)), (0, 10))                  # large copy in colour
    path = tmp_path / "two.png"
    collage.save(path)
    prepared = prepare_portrait(path, size=96)
    assert (prepared.kind, prepared.faces) == ("photo", 2)
    assert "2 faces" in prepared.note and "largest" in prepared.note
    out = _uint8(prepared.pixels).astype(int)
    assert np.abs(out[..., 0] - out[..., 2]).mean() > 8    # the colour copy: the grey one has R == B


@pytest.mark.parametrize("kind", ["cat", "noise", "flat", "white"])
def test_no_face_is_a_one_line_error_naming_the_file(tmp_path, kind):
    rng = np.random.default_rng(0)
    image = {"cat": samples.chelsea(), "noise": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
             "flat": np.full((200, 200, 3), (200, 120, 40), np.uint8),
             "white": np.full((200, 200, 3), 255, np.uint8)}[kind]
    path = tmp_path / f"{kind}.png"
    Image.fromarray(image).save(path)
    with pytest.raises(FaceNotFoundError) as err:
        prepare_portrait(path, size=64)
    message = str(err.value)
    assert str(path) in message and "no face" in message and "transparent" in message and "\n" not in message
    assert isinstance(err.value, DataError)


def _disc(width: int = 100, height: int = 140) -> Image.Image:
    """A render-like image: a coloured disc on a transparent background, soft edge."""
    yy, xx = np.mgrid[:height, :width]
    r = np.hypot(xx - width / 2, yy - height / 2)
    alpha = np.clip((40 - r) * 64, 0, 255).astype(np.uint8)
    rgb = np.broadcast_to(np.array([30, 160, 220], np.uint8), (height, width, 3))
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def test_render_with_transparency_is_used_as_is(tmp_path):
    disc = _disc()
    path = tmp_path / "render.png"
    disc.save(path)
    expected = square_on_white(disc, size=48)
    for given in (disc, path, str(path), np.asarray(disc)):
        prepared = prepare_portrait(given, size=48)
        assert (prepared.kind, prepared.faces, prepared.note) == ("render", 0, None)
        assert torch.equal(prepared.pixels, expected)


def test_render_already_on_white_without_a_face_is_used_as_is():
    on_white = Image.alpha_composite(Image.new("RGBA", (100, 140), "white"), _disc()).convert("RGB")
    prepared = prepare_portrait(on_white, size=48)
    assert (prepared.kind, prepared.faces) == ("render", 0)
    assert torch.equal(prepared.pixels, square_on_white(on_white, size=48))


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_grey_palette_and_16_bit_photos_are_converted(tmp_path, mode):
    astronaut = Image.fromarray(samples.astronaut())
    if mode == "I;16":      # a 16-bit grey PNG: 8-bit values spread over 0..65535
        image = Image.fromarray(np.asarray(astronaut.convert("L")).astype(np.uint16) * 257)
    else:
        image = astronaut.convert(mode)
    path = tmp_path / f"astronaut_{mode.replace(';', '')}.png"
    image.save(path)
    with Image.open(path) as check:
        assert check.mode == mode
    prepared = prepare_portrait(path, size=64)
    assert (prepared.kind, prepared.faces) == ("photo", 1)


def test_when_grabcut_fails_the_crop_is_kept_and_the_note_says_so(monkeypatch):
    def broken(*args, **kwargs):
        raise cv2.error("out of luck")

    monkeypatch.setattr(face.cv2, "grabCut", broken)
    prepared = prepare_portrait(samples.astronaut(), size=64)
    assert prepared.kind == "photo" and "background" in prepared.note and "GrabCut failed" in prepared.note
    assert _uint8(prepared.pixels)[:6, :6].max() < 200      # the photo's dark backdrop is still there


def test_measuring_a_prepared_photo_gives_back_the_training_framing(tmp_path):
    out = _uint8(prepare_portrait(samples.astronaut(), size=128).pixels)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    Image.fromarray(out).save(paths[0])
    Image.fromarray(np.full((128, 128, 3), 255, np.uint8)).save(paths[1])   # no face: counted, not used
    framing, found, total = measure_training_framing(paths)
    assert (found, total) == (1, 2)
    assert abs(framing.centre_x - TRAINING_FRAMING.centre_x) < 0.04
    assert abs(framing.centre_y - TRAINING_FRAMING.centre_y) < 0.04
    assert abs(framing.size / TRAINING_FRAMING.size - 1) < 0.15


def _png_header_only(width: int, height: int) -> bytes:
    """The start of a PNG that claims width x height: its header and a first scrap of pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(100)))


def _bad_file(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(samples.astronaut()).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif kind == "text":
        path.write_text("not a picture\n")
    elif kind == "tiny":
        Image.new("RGB", (8, 8), "red").save(path)
    elif kind == "huge":
        path.write_bytes(_png_header_only(9000, 9000))   # refused from the header, before any decoding
    elif kind == "bomb":
        path.write_bytes(_png_header_only(20000, 20000))  # 400 Mpx: Pillow's decompression-bomb guard
    return path


@pytest.mark.parametrize("kind, words", [
    ("missing", "not found"),
    ("empty", "empty"),
    ("truncated", "truncated"),
    ("text", "not an image"),
    ("tiny", "8x8 px; give at least 32 px"),
    ("huge", "at most 8192 px"),
    ("bomb", "too large"),
])
def test_bad_files_are_data_errors_with_a_clear_line(tmp_path, kind, words):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(DataError) as err:
        prepare_portrait(path, size=64)
    message = str(err.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


def test_bad_arrays_are_data_errors():
    with_nan = np.random.default_rng(0).random((64, 64, 3))
    with_nan[3, 4, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        prepare_portrait(with_nan, size=32)
    with pytest.raises(DataError, match="at least 32 px"):
        prepare_portrait(np.zeros((8, 8, 3), np.uint8), size=32)
    with pytest.raises(DataError, match="not an image"):
        prepare_portrait(np.zeros((64, 64, 5), np.uint8), size=32)
