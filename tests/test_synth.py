"""The procedural avatar dataset: attributes, captions, geometry, renders, files, resume, CLI."""

from __future__ import annotations

import inspect
import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rodin.data import avatar as av
from rodin.data.avatar import AvatarAttributes, caption, sample_attributes
from rodin.data.contact import contact_sheet
from rodin.data.sdf import BUST_RADIUS, build_avatar
from rodin.data.synth import (
    ELEVATION_RANGE,
    FORMAT,
    MARKER,
    PORTRAIT_TARGET,
    SUPERSAMPLE,
    render_avatar,
    render_views,
    sdf_grid,
    subject_split,
    synth_dataset,
    torch_threads,
)
from rodin.errors import DataError
from rodin.render.cameras import DEFAULT_FOV_X, orbit_cameras

SMALL = dict(views=6, resolution=32, portrait_resolution=32)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synth_dataset(out, subjects=3, seed=7, progress=False, **SMALL)
    return out


# --- attributes and captions ---------------------------------------------------------------------

def test_attributes_are_deterministic_and_varied():
    assert sample_attributes(3) == sample_attributes(3)
    sets = [sample_attributes(s) for s in range(200)]
    keys = {tuple(sorted(a.categorical().items())) for a in sets}
    assert len(keys) >= 190, "200 avatars should rarely repeat"
    seen = {name: Counter(getattr(a, name) for a in sets) for name in (
        "hair_style", "hair_colour", "beard", "glasses", "hat", "clothing", "expression", "eye_colour",
        "brows", "nose", "ears", "clothing_colour", "skin")}
    expected = {"hair_style": av.HAIR_STYLES, "beard": av.BEARDS, "glasses": av.GLASSES, "hat": av.HATS,
                "clothing": av.CLOTHING, "expression": av.EXPRESSIONS, "brows": av.BROWS, "nose": av.NOSES,
                "ears": av.EARS, "eye_colour": list(av.EYE_COLOURS), "skin": av.SKIN_NAMES}
    for name, values in expected.items():
        assert set(seen[name]) == set(values), f"{name}: missing {set(values) - set(seen[name])}"
    assert len(seen["hair_colour"]) >= 8 and len(seen["clothing_colour"]) >= 10
    for a in sets:
        for name, (lo, hi) in av.SHAPE_RANGES.items():
            assert lo <= a.shape[name] <= hi, name
        assert a.hat == "none" or a.hair_style not in ("afro", "bun", "mohawk")
    # Round trip through JSON.
    a = sets[5]
    assert AvatarAttributes.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_captions_vary_and_mention_the_attributes():
    sets = [sample_attributes(s) for s in range(200)]
    texts = [caption(a) for a in sets]
    assert len(set(texts)) >= 195
    assert caption(sets[0]) == caption(sets[0])                          # deterministic
    wordings = {caption(sets[0], random.Random(k)) for k in range(20)}
    assert len(wordings) >= 5, "the same avatar should be described in several ways"
    clothing_words = {"t-shirt": ("t-shirt", "tee"), "hoodie": ("hoodie", "hooded"), "suit": ("suit",),
                      "turtleneck": ("turtleneck", "roll-neck"), "polo": ("polo", "collared")}
    for a, text in zip(sets, texts, strict=True):
        assert text == text.strip() and "  " not in text
        assert any(w in text for w in clothing_words[a.clothing]), text
        if a.glasses != "none":
            assert any(w in text for w in ("glasses", "spectacles", "shades", "sunglasses")), text
        if a.hat != "none":
            assert any(w in text for w in ("cap", "beanie", "hat")), text
        if a.hair_style == "bald":
            assert any(w in text for w in ("bald", "shaved", "no hair")), text
        if a.beard == "full":
            assert "beard" in text or "bearded" in text, text



def test_partial_captions_name_only_as_many_parts_as_asked():
    """A partial caption is a whole caption's parts, fewer of them: every kept part is one the avatar's
    whole captions can say, and a beard is never implied by the noun alone."""
    for seed in range(60):
        a = sample_attributes(seed)
        whole = " ".join(caption(a, random.Random(k)) for k in range(400))
        for mentions in (1, 2, 3):
            text = caption(a, random.Random(f"{seed}/{mentions}"), mentions=mentions)
            assert text == text.strip() and "  " not in text
            assert caption(a, random.Random(f"{seed}/{mentions}"), mentions=mentions) == text   # deterministic
            parts = text.replace(" and ", ", ").count(", ") + 1
            if mentions == 1:
                assert parts <= 2, text            # one clause, or one adjective with a clause-free noun
            if not any(w in text for w in ("beard", "stubble", "stubbly", "shadow", "unshaven")):
                assert not any(f" {noun}" in text for noun in ("man", "guy")), text
            for word in ("glasses", "spectacles", "sunglasses", "cap", "beanie"):
                if word in text:
                    assert word in whole, (word, text)
    lengths = [len(caption(sample_attributes(s), random.Random(s), mentions=1)) for s in range(100)]
    full = [len(caption(sample_attributes(s), random.Random(s))) for s in range(100)]
    assert sum(lengths) < 0.6 * sum(full)

# --- geometry and rendering ----------------------------------------------------------------------

def test_sdf_sign_and_bounds():
    for seed in range(6):
        avatar = build_avatar(sample_attributes(seed))
        inside = torch.tensor([[0.0, 0.45, 0.0], [0.0, -0.6, 0.0], [0.0, 0.0, -0.03]])
        outside = torch.tensor([[0.99, 0.99, 0.99], [0.0, 0.45, 0.9], [-0.95, 0.5, 0.0], [0.0, -0.99, 0.0]])
        assert (avatar.distance(inside) < -0.02).all()
        assert (avatar.distance(outside) > 0.02).all()
        # Culling by part boxes: the same values below the margin, the same sign everywhere.
        p = torch.rand(4000, 3) * 2 - 1
        exact, culled = avatar.distance(p), avatar.distance(p, margin=0.2)
        # (Far from a part its SDF is only a bound, often below the distance to the part's box; the
        # culled value is then the larger, still safe, bound.)
        near = culled < 0.05
        assert near.sum() > 50
        assert torch.allclose(exact[near], culled[near], atol=1e-5)
        assert (exact.clamp_max(0.2) <= culled + 1e-5).all() and (culled <= 0.2).all()
        assert ((culled < 0) == (exact < 0)).all()


def test_grid_matches_the_exact_sdf_near_the_surface():
    avatar = build_avatar(sample_attributes(1))
    grid = sdf_grid(avatar)
    p = torch.rand(20000, 3) * 2 - 1
    exact = avatar.distance(p)
    approx = grid.sample(p)
    near = exact.abs() < 0.03
    assert near.sum() > 100
    assert (approx[near] - exact[near]).abs().max() < 0.01
    assert ((approx > 0) == (exact > 0))[exact.abs() > 0.05].all()


def test_portrait_shows_a_face_looking_toward_plus_z():
    avatar = build_avatar(sample_attributes(4))
    front = render_avatar(avatar, orbit_cameras([0.0], [0.0], target=PORTRAIT_TARGET)[0], 0.45, 48)
    back = render_avatar(avatar, orbit_cameras([180.0], [0.0], target=PORTRAIT_TARGET)[0], 0.45, 48)
    assert front.shape == (48, 48, 4)
    # The eyes (white eyeballs) are visible from the front only.
    def eye_white(img):
        rgb, a = img[..., :3], img[..., 3]
        return int(((rgb.min(axis=-1) > 0.8) & (a > 0.99))[10:30].sum())
    assert eye_white(front) > eye_white(back)


def test_a_supersampled_pixel_is_the_mean_of_its_footprint():
    """k x k supersampling is the premultiplied mean of the k-times-larger render's blocks: a pixel's colour is
    its footprint's, so texture finer than a pixel does not alias differently in each view."""
    avatar = build_avatar(sample_attributes(11))
    camera = orbit_cameras([30.0], [10.0])
    grid = sdf_grid(avatar)
    fine = torch.from_numpy(render_views(avatar, camera, DEFAULT_FOV_X, 48, grid))[0]
    mean = render_views(avatar, camera, DEFAULT_FOV_X, 16, grid, supersample=3)[0]
    blocks = torch.cat([fine[..., :3] * fine[..., 3:], fine[..., 3:]], -1).reshape(16, 3, 16, 3, 4).mean((1, 3))
    covered = blocks[..., 3] >= 0.5 / 255
    assert np.allclose(mean[..., 3][covered], blocks[..., 3][covered].numpy(), atol=1e-6)
    assert (mean[..., 3][~covered] == 0).all() and (mean[..., :3][~covered] == 0).all()
    assert np.allclose((mean[..., :3] * mean[..., 3:])[covered], blocks[..., :3][covered].numpy(), atol=1e-5)
    # Edges are partly covered, and a pixel's colour varies less than its nine points' colours do.
    assert ((mean[..., 3] > 0.05) & (mean[..., 3] < 0.95)).sum() > 10
    single = render_views(avatar, camera, DEFAULT_FOV_X, 16, grid)[0]
    assert np.array_equal(single, render_views(avatar, camera, DEFAULT_FOV_X, 16, grid, supersample=1)[0])
    with pytest.raises(ValueError):
        render_views(avatar, camera, DEFAULT_FOV_X, 16, grid, supersample=0)


def test_supersampling_is_recorded_and_a_change_redoes_the_subject(dataset, tmp_path):
    from rodin.cli.data import synth

    transforms = json.loads((dataset / "subject_00000" / "transforms.json").read_text())
    assert transforms["rodin"]["supersample"] == SUPERSAMPLE > 1
    assert json.loads((dataset / "index.json").read_text())["supersample"] == SUPERSAMPLE
    # The CLI's default is the generator's (typer needs it literally, without importing torch).
    assert inspect.signature(synth).parameters["supersample"].default.default == SUPERSAMPLE
    # A folder made with another supersampling is redone, and 1 shades one point per pixel.
    out = tmp_path / "one"
    synth_dataset(out, subjects=1, seed=7, progress=False, supersample=1, **SMALL)
    view = np.asarray(Image.open(out / "subject_00000" / "images" / "r_000.png"))
    assert not np.array_equal(view, np.asarray(Image.open(dataset / "subject_00000" / "images" / "r_000.png")))
    synth_dataset(out, subjects=1, seed=7, progress=False, **SMALL)
    assert _files(out / "subject_00000") == _files(dataset / "subject_00000")


# --- the files -----------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes_and_prefix_is_stable(dataset, tmp_path):
    again = synth_dataset(tmp_path / "again", subjects=3, seed=7, progress=False, **SMALL)
    assert _files(dataset) == _files(again)
    fewer = synth_dataset(tmp_path / "fewer", subjects=1, seed=7, progress=False, **SMALL)
    assert _files(fewer / "subject_00000") == _files(dataset / "subject_00000")
    other = synth_dataset(tmp_path / "other", subjects=1, seed=8, progress=False, **SMALL)
    assert _files(other / "subject_00000") != _files(dataset / "subject_00000")


def test_layout_index_and_attributes(dataset):
    index = json.loads((dataset / "index.json").read_text())
    assert index["format"] == FORMAT and index["seed"] == 7 and index["views"] == SMALL["views"]
    assert index["resolution"] == 32 and index["portrait_resolution"] == 32
    assert [s["id"] for s in index["subjects"]] == ["subject_00000", "subject_00001", "subject_00002"]
    for entry in index["subjects"]:
        folder = dataset / entry["id"]
        assert entry["split"] in ("train", "val", "test") and entry["split"] == subject_split(entry["id"])
        attrs = json.loads((folder / "attributes.json").read_text())
        assert attrs["caption"] == entry["caption"] and "seed" in attrs and "shape" in attrs
        assert attrs["hair_style"] in av.HAIR_STYLES
        for name in ("transforms.json", "portrait.png", "mesh.ply", MARKER):
            assert (folder / name).is_file(), name
        assert not list(folder.rglob("*.tmp"))


def test_transforms_cameras_look_at_the_head(dataset):
    meta = json.loads((dataset / "subject_00000" / "transforms.json").read_text())
    assert meta["rodin"]["up"] == "y" and meta["rodin"]["bound"] == 1.0
    fov = meta["camera_angle_x"]
    assert math.isclose(fov, DEFAULT_FOV_X, rel_tol=1e-6)
    frames = meta["frames"]
    assert len(frames) == SMALL["views"]
    elevations, azimuths = [], []

    def project(c2w: np.ndarray, point: np.ndarray, fov_x: float, width: int) -> np.ndarray:
        w2c = np.linalg.inv(c2w)
        q = w2c[:3, :3] @ point + w2c[:3, 3]
        assert q[2] < 0, "the point must be in front of the camera (-z)"
        f = 0.5 * width / math.tan(0.5 * fov_x)
        return np.array([width / 2 + f * q[0] / -q[2], width / 2 - f * q[1] / -q[2]])

    for k, frame in enumerate(frames):
        assert frame["file_path"] == f"images/r_{k:03d}.png"
        c2w = np.array(frame["transform_matrix"], dtype=np.float64)
        assert c2w.shape == (4, 4) and np.allclose(c2w[3], [0, 0, 0, 1])
        assert np.allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-5)
        eye = c2w[:3, 3]
        assert np.linalg.norm(eye) > 1.8          # outside the box
        uv = project(c2w, np.zeros(3), fov, 32)
        assert np.abs(uv - 16).max() < 1.0        # the origin sits at the image centre
        head = project(c2w, np.array([0.0, 0.4, 0.1]), fov, 32)
        assert (head > 0).all() and (head < 32).all()
        elevations.append(math.degrees(math.asin(eye[1] / np.linalg.norm(eye))))
        azimuths.append(math.degrees(math.atan2(eye[0], eye[2])) % 360)
    assert ELEVATION_RANGE[0] - 1 <= min(elevations) and max(elevations) <= ELEVATION_RANGE[1] + 1
    assert max(elevations) - min(elevations) > 30
    assert len({int(a // 90) for a in azimuths}) == 4, "views from all sides"
    portrait = meta["portrait"]
    pc2w = np.array(portrait["transform_matrix"])
    assert portrait["file_path"] == "portrait.png" and pc2w[2, 3] > 2.0   # in front of the face (+z)
    uv = project(pc2w, np.array(PORTRAIT_TARGET), portrait["camera_angle_x"], 32)
    assert np.abs(uv - 16).max() < 1.0


def test_images_are_rgba_with_sensible_alpha(dataset):
    folder = dataset / "subject_00001"
    coverages = []
    partial = 0
    for path in sorted((folder / "images").glob("r_*.png")) + [folder / "portrait.png"]:
        img = np.asarray(Image.open(path))
        assert img.shape == (32, 32, 4) and img.dtype == np.uint8
        a = img[..., 3]
        assert a[0, 0] == 0 and a[0, -1] == 0                     # background in the top corners
        if path.name != "portrait.png":                            # (the portrait crops the bust)
            assert a[-1, 0] == 0 and a[-1, -1] == 0
        assert (img[..., :3][a == 0] == 0).all()
        coverages.append((a > 127).mean())
        partial += int(((a > 0) & (a < 255)).sum())
        assert img[..., :3][a == 255].mean() > 20    # lit, not black
    assert all(0.12 < c < 0.75 for c in coverages), coverages
    assert partial > 20, "anti-aliased edges"


def test_mesh_is_inside_the_box(dataset):
    trimesh = pytest.importorskip("trimesh")
    mesh = trimesh.load(dataset / "subject_00002" / "mesh.ply", process=False)
    assert len(mesh.faces) > 1000
    assert np.abs(mesh.vertices).max() < 0.99
    assert np.linalg.norm(mesh.vertices, axis=1).max() < BUST_RADIUS + 0.02
    assert mesh.vertices[:, 1].max() > 0.6 and mesh.vertices[:, 1].min() < -0.9    # head to bust
    assert mesh.volume > 0.2                                                       # outward faces


def test_resume_skips_complete_and_redoes_partial(tmp_path):
    out = tmp_path / "data"
    synth_dataset(out, subjects=2, seed=3, progress=False, **SMALL)
    before = _files(out)
    kept = {p: p.stat().st_mtime_ns for p in (out / "subject_00000").rglob("*") if p.is_file()}
    # Subject 1 is left half-written: marker gone, one image gone, a stray file.
    (out / "subject_00001" / MARKER).unlink()
    (out / "subject_00001" / "images" / "r_002.png").unlink()
    (out / "subject_00001" / "junk.txt").write_text("partial")
    (out / "index.json").unlink()
    synth_dataset(out, subjects=2, seed=3, progress=False, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept         # untouched
    assert _files(out) == before                                   # redone to the same bytes
    # Other parameters: the subjects are redone.
    synth_dataset(out, subjects=1, seed=3, progress=False, views=4, resolution=32, portrait_resolution=32)
    assert len(list((out / "subject_00000" / "images").glob("*.png"))) == 4
    assert json.loads((out / "index.json").read_text())["views"] == 4


def test_split_is_stable_and_roughly_90_5_5():
    splits = Counter(subject_split(f"subject_{i:05d}") for i in range(4000))
    assert 0.86 < splits["train"] / 4000 < 0.94
    assert splits["val"] > 100 and splits["test"] > 100
    assert subject_split("subject_00042") == subject_split("subject_00042")


def test_errors_are_data_errors(tmp_path):
    with pytest.raises(DataError):
        synth_dataset(tmp_path / "x", subjects=0, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError):
        synth_dataset(tmp_path / "file", subjects=1, progress=False, **SMALL)
    with pytest.raises(DataError):
        contact_sheet(tmp_path / "missing", tmp_path / "grid.png")


def test_contact_sheet_and_cli(dataset, tmp_path):
    from typer.testing import CliRunner

    from rodin.cli.data import app

    sheet = contact_sheet(dataset, tmp_path / "sheet.png", max_subjects=2, columns=2)
    img = np.asarray(Image.open(sheet))
    assert img.shape[2] == 3 and img.shape[1] > 300 and (img < 250).any()
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "cli"), "--subjects", "1", "--views", "2",
                                 "--resolution", "16", "--portrait-resolution", "16", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "index.json").is_file()
    result = runner.invoke(app, ["show", str(tmp_path / "cli"), "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.png").is_file()


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
