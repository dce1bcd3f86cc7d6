"""Property tests: whatever bytes or JSON the image and config loaders are given, they load or raise a
RodinError subclass, never anything else (transforms.json has its own in test_nerf.py)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rodin.config import BaseModelConfig, DecoderConfig, FitConfig, TrainConfig, from_dict, load_config
from rodin.errors import ConfigError, RodinError

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _png(mode: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


VALID = [_png("RGBA", (8, 8)), _png("RGB", (8, 6)), _png("L", (5, 8)), _png("LA", (8, 8)), _png("P", (8, 8)),
         _png("I;16", (8, 8)), _png("1", (8, 8))]


@st.composite
def damaged_images(draw) -> bytes:
    """A valid PNG cut short, with bytes flipped, or random bytes (sometimes behind a PNG signature)."""
    kind = draw(st.sampled_from(["cut", "flip", "random", "signed"]))
    data = bytearray(draw(st.sampled_from(VALID)))
    if kind == "cut":
        return bytes(data[:draw(st.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    noise = draw(st.binary(max_size=200))
    return (b"\x89PNG\r\n\x1a\n" + noise) if kind == "signed" else noise


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@PROPERTY
@given(data=damaged_images())
def test_portrait_loaders_load_or_raise_rodin_errors(folder, data):
    from rodin.semantic.face import prepare_portrait
    from rodin.semantic.pixel_encoder import load_portrait

    path = folder / "portrait.png"
    path.write_bytes(data)
    for load in (lambda: load_portrait(path, size=16), lambda: prepare_portrait(path, size=16)):
        try:
            pixels = load()
        except RodinError as err:
            assert "\n" not in str(err)
        else:
            pixels = getattr(pixels, "pixels", pixels)
            assert tuple(pixels.shape) == (3, 16, 16) and bool(pixels.isfinite().all())


@PROPERTY
@given(data=damaged_images())
def test_subject_views_load_or_raise_rodin_errors(folder, data):
    from rodin.data.nerf import load_subject

    subject = folder / "subject"
    subject.mkdir(exist_ok=True)
    (subject / "r_0.png").write_bytes(VALID[0])
    (subject / "r_1.png").write_bytes(data)
    frames = [{"file_path": f"r_{i}.png", "transform_matrix": np.eye(4).tolist()} for i in range(2)]
    (subject / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    try:
        views = load_subject(subject, bound=1.0)
    except RodinError as err:
        assert "\n" not in str(err)
    else:
        assert views.images.shape[0] == 2 and bool(views.images.isfinite().all())


@PROPERTY
@given(array=st.one_of(
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 6)).map(
        lambda s: np.zeros(s, np.uint8)),
    st.tuples(st.integers(1, 9), st.integers(1, 9)).map(lambda s: np.zeros(s, np.float32)),
    st.sampled_from([np.full((8, 8, 3), np.nan, np.float32), np.full((8, 8, 4), np.inf), np.zeros((2, 2, 2, 3)),
                     np.array(["a", "b"]), np.zeros((8, 8, 3), bool)]),
))
def test_portrait_arrays_load_or_raise_rodin_errors(array):
    from rodin.semantic.face import prepare_portrait

    try:
        prepared = prepare_portrait(array, size=16)
    except RodinError as err:
        assert "\n" not in str(err)
    else:
        assert tuple(prepared.pixels.shape) == (3, 16, 16)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
CONFIGS = [DecoderConfig, FitConfig, TrainConfig, BaseModelConfig]


@PROPERTY
@given(cls=st.sampled_from(CONFIGS), values=json_values, field_value=json_values, pick=st.integers(0, 30))
def test_configs_build_or_raise_config_errors(cls, values, field_value, pick):
    import dataclasses

    names = [f.name for f in dataclasses.fields(cls)]
    for candidate in (values, {names[pick % len(names)]: field_value}):
        try:
            config = from_dict(cls, candidate)
        except ConfigError as err:
            assert "\n" not in str(err)
        else:
            assert isinstance(config, cls)


@PROPERTY
@given(text=st.one_of(st.text(max_size=60), json_values.map(json.dumps)), raw=st.binary(max_size=40))
def test_config_files_load_or_raise_config_errors(folder, text, raw):
    for name, write in (("text.json", lambda p: p.write_text(text)), ("raw.json", lambda p: p.write_bytes(raw))):
        path = folder / name
        write(path)
        for cls in (DecoderConfig, TrainConfig):
            try:
                load_config(cls, path)
            except ConfigError as err:
                assert "\n" not in str(err)
