"""The NeRF-synthetic loader: layouts, world conversion, and every bad input as one DataError line."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rodin.data.nerf import list_subjects, load_subject, read_transforms
from rodin.errors import DataError, RodinError

FOV = 0.6911112070083618


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, eye
    return m


def orbit(n: int, radius: float, centre=(0.0, 0.0, 0.0), up_axis: str = "y") -> list[np.ndarray]:
    """Cameras around `centre` at elevations -20..40 degrees, looking at it, level horizon."""
    centre = np.asarray(centre, dtype=np.float64)
    mats = []
    for i in range(n):
        az, el = 2 * math.pi * i / n, math.radians(-20 + 60 * i / max(n - 1, 1))
        a, b, h = math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)
        if up_axis == "y":
            offset, up = (a, h, b), (0, 1, 0)
        else:                                   # Blender: z up
            offset, up = (a, -b, h), (0, 0, 1)
        mats.append(look_at(centre + radius * np.array(offset), centre, up))
    return mats


def write_image(path: Path, array: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def make_subject(root: Path, mats, *, fov: float = FOV, size=(4, 4), layout: str = "single",
                 ext: bool = True, mode: str = "RGBA", extra: dict | None = None, seed: int = 0
                 ) -> list[np.ndarray]:
    """A subject folder with random images; returns the images as uint8 arrays, in frame order."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    channels = {"RGBA": 4, "RGB": 3, "L": 1}[mode]
    images, frames = [], []
    for i, m in enumerate(mats):
        split = SPLITS_CYCLE[i % 3] if layout == "splits" else "train"
        name = f"{split}/r_{i}"
        array = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
        array = array[..., 0] if mode == "L" else array
        write_image(root / f"{name}.png", array)
        images.append(array)
        frames.append((split, {"file_path": f"./{name}" + (".png" if ext else ""),
                               "transform_matrix": np.asarray(m).tolist()}))
    if layout == "single":
        doc = {"camera_angle_x": fov, "frames": [f for _, f in frames], **(extra or {})}
        (root / "transforms.json").write_text(json.dumps(doc))
    else:
        for split in SPLITS_CYCLE:
            doc = {"camera_angle_x": fov, "frames": [f for s, f in frames if s == split]}
            (root / f"transforms_{split}.json").write_text(json.dumps(doc))
    return images


SPLITS_CYCLE = ("train", "val", "test")


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, with no real pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
            + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------
# Good folders
# ---------------------------------------------------------------------------------------------


def test_round_trip_rgba_y_up_unit_bound(tmp_path):
    mats = orbit(5, 3.2)
    images = make_subject(tmp_path / "s", mats, extra={"rodin": {"up": "y", "bound": 1.0}})
    views = load_subject(tmp_path / "s")
    assert views.name == "s" and len(views) == 5
    assert views.images.shape == (5, 4, 4, 4) and views.images.dtype == torch.float32
    expected = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)
    assert torch.equal(views.images, expected)
    assert torch.allclose(views.c2w, torch.from_numpy(np.stack(mats)).float(), atol=1e-6)
    assert torch.allclose(views.world_from_file, torch.eye(4))
    assert views.fov_x == pytest.approx(FOV)
    assert views.splits == ("train",) * 5
    assert views.file_paths[2] == tmp_path / "s" / "train" / "r_2.png"
    assert views.portrait is None and views.attributes is None and views.mesh is None


def test_rgb_and_grey_have_opaque_alpha(tmp_path):
    for mode in ("RGB", "L"):
        images = make_subject(tmp_path / mode, orbit(2, 3.0), mode=mode)
        views = load_subject(tmp_path / mode, up="y", bound=1.0)
        assert torch.all(views.images[..., 3] == 1.0)
        grey = np.stack(images).astype(np.float32) / 255.0
        rgb = grey if mode == "RGB" else np.repeat(grey[..., None], 3, -1)
        assert torch.equal(views.images[..., :3], torch.from_numpy(rgb))


def test_palette_with_transparency_and_jpeg(tmp_path):
    root = tmp_path / "s"
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.info["transparency"] = 0
    root.mkdir()
    palette.save(root / "a.png")
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(root / "b.jpg", quality=95)
    frames = [{"file_path": name, "transform_matrix": m.tolist()} for name, m in zip(["a", "b"], orbit(2, 3))]
    (root / "transforms.json").write_text(json.dumps({"camera_angle_x": FOV, "frames": frames}))
    views = load_subject(root)
    assert views.images[0, 0, 0, 3] == 0.0 and views.images[0, 1, 1].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert views.images[1, ..., 3].min() == 1.0
    assert abs(float(views.images[1, ..., :3].mean()) - 200 / 255) < 0.02
    assert views.file_paths[1].name == "b.jpg"


def test_split_files_and_extensionless_paths(tmp_path):
    images = make_subject(tmp_path / "s", orbit(6, 4.0), layout="splits", ext=False)
    t = read_transforms(tmp_path / "s")
    assert [p.name for p in t.sources] == ["transforms_train.json", "transforms_val.json",
                                           "transforms_test.json"]
    assert t.splits == ("train", "train", "val", "val", "test", "test")
    assert all(p.suffix == ".png" and p.is_file() for p in t.file_paths)
    assert read_transforms(tmp_path / "s" / "transforms_val.json").splits == ("val", "val")
    views = load_subject(tmp_path / "s")
    order = [0, 3, 1, 4, 2, 5]                  # frames grouped by split file
    expected = np.stack([images[i] for i in order]).astype(np.float32) / 255.0
    assert torch.equal(views.images, torch.from_numpy(expected))
    assert views.split("val").tolist() == [2, 3]


def test_frame_split_field_in_single_transforms(tmp_path):
    make_subject(tmp_path / "s", orbit(3, 3.0))
    doc = json.loads((tmp_path / "s" / "transforms.json").read_text())
    doc["frames"][1]["split"] = "test"
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(doc))
    assert read_transforms(tmp_path / "s").splits == ("train", "test", "train")


@pytest.mark.parametrize("up", ["auto", "z"])
def test_blender_z_up_scaled_offset_scene(tmp_path, up):
    centre, radius = np.array([0.3, -0.2, 0.5]), 4.0
    make_subject(tmp_path / "s", orbit(8, radius, centre, up_axis="z"))
    views = load_subject(tmp_path / "s", up=up)
    c2w = views.c2w.double()
    eyes, backs, ups, rights = c2w[:, :3, 3], c2w[:, :3, 2], c2w[:, :3, 1], c2w[:, :3, 0]
    expected = 1.0 / math.sin(FOV / 2)          # the sphere the views see has radius 1
    assert torch.allclose(eyes.norm(dim=1), torch.full((8,), expected, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(rights[:, 1], torch.zeros(8, dtype=torch.float64), atol=1e-5)   # level horizon
    assert torch.all(ups[:, 1] > 0.75)                  # elevations up to 40 degrees
    assert torch.allclose(eyes.mean(0)[[0, 2]], torch.zeros(2, dtype=torch.float64), atol=0.3)
    # Optical axes pass through the origin.
    along = (-eyes * -backs).sum(1, keepdim=True)
    miss = (eyes + along * -backs).norm(dim=1)
    assert miss.max() < 1e-4
    # Rotations stay rigid; the similarity maps the scene's centre to the origin and +z to +y.
    eye3 = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(c2w[:, :3, :3].transpose(1, 2) @ c2w[:, :3, :3], eye3.expand(8, 3, 3), atol=1e-5)
    w = views.world_from_file.double()
    assert torch.allclose(w @ torch.tensor([*centre, 1.0]), torch.tensor([0.0, 0, 0, 1], dtype=torch.float64),
                          atol=1e-5)
    direction = w[:3, :3] @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(direction / direction.norm(), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    # A face toward Blender's front (-y) ends up facing +z.
    front = w[:3, :3] @ torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(front / front.norm(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_given_bound_keeps_origin_and_scales(tmp_path):
    mats = orbit(4, 3.0, up_axis="z")
    make_subject(tmp_path / "s", mats)
    views = load_subject(tmp_path / "s", up="z", bound=2.0)
    t = torch.from_numpy(np.stack(mats))[:, :3, 3]
    expected = torch.stack([t[:, 0], t[:, 2], -t[:, 1]], 1) / 2.0
    assert torch.allclose(views.c2w[:, :3, 3].double(), expected, atol=1e-6)


def test_auto_world_of_a_y_up_scene_is_a_pure_scale(tmp_path):
    make_subject(tmp_path / "s", orbit(6, 3.0))
    w = load_subject(tmp_path / "s").world_from_file.double()
    scale = 1.0 / (3.0 * math.sin(FOV / 2))
    assert torch.allclose(w, torch.diag(torch.tensor([scale, scale, scale, 1.0], dtype=torch.float64)),
                          atol=1e-5)


def test_parallel_cameras_fall_back_to_points_nearest_the_origin(tmp_path):
    mats = [look_at((x, 0.0, 4.0), (x, 0.0, 0.0)) for x in (1.0, 2.0, 3.0)]
    make_subject(tmp_path / "s", mats)
    views = load_subject(tmp_path / "s")
    mapped = views.world_from_file.double() @ torch.tensor([2.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(mapped[:3], torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(views.c2w[:, :3, 3].norm(dim=1).median(),
                          torch.tensor(1.0 / math.sin(FOV / 2)), atol=1e-4)


def test_nerfstudio_focal_and_width(tmp_path):
    make_subject(tmp_path / "s", orbit(3, 3.0), size=(8, 6))
    doc = json.loads((tmp_path / "s" / "transforms.json").read_text())
    del doc["camera_angle_x"]
    doc.update(fl_x=10.0, fl_y=10.0, w=8, h=6, cx=4, cy=3)
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(doc))
    assert read_transforms(tmp_path / "s").fov_x == pytest.approx(2 * math.atan(8 / 20))
    del doc["w"]                                     # width then comes from the first image
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(doc))
    assert read_transforms(tmp_path / "s").fov_x == pytest.approx(2 * math.atan(8 / 20))
    del doc["fl_x"]                                  # per-frame intrinsics, all equal
    for frame in doc["frames"]:
        frame.update(fl_x=10.0, w=8)
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(doc))
    assert load_subject(tmp_path / "s").images.shape == (3, 6, 8, 4)


def test_our_own_folder_exposes_portrait_attributes_mesh(tmp_path):
    root = tmp_path / "s"
    portrait_c2w = look_at((0, 0, 3.0), (0, 0, 0))
    make_subject(root, orbit(3, 3.2), extra={
        "rodin": {"up": "y", "bound": 1.0, "generator": "procedural"},
        "portrait": {"file_path": "portrait.png", "camera_angle_x": 0.5,
                     "transform_matrix": portrait_c2w.tolist()}})
    write_image(root / "portrait.png", np.zeros((8, 8, 4), np.uint8))
    (root / "attributes.json").write_text(json.dumps({"caption": "a person with red hair", "seed": 3}))
    (root / "mesh.ply").write_text("ply\n")
    views = load_subject(root)
    assert views.portrait == root / "portrait.png" and views.portrait_fov_x == 0.5
    assert torch.allclose(views.portrait_c2w, torch.from_numpy(portrait_c2w).float())
    assert views.attributes["caption"] == "a person with red hair" and views.caption.endswith("hair")
    assert views.mesh == root / "mesh.ply"


def test_downscale_is_area_filter_on_premultiplied_colour(tmp_path):
    root = tmp_path / "s"
    make_subject(root, orbit(1, 3.0), size=(4, 4))
    image = np.zeros((4, 4, 4), np.uint8)
    image[..., 1] = 255                              # invisible green everywhere
    image[0, 0] = (255, 0, 0, 255)                   # one opaque red pixel in the top-left 2x2 block
    image[2:, 2:] = (0, 0, 255, 128)                 # half-transparent blue block
    write_image(root / "train" / "r_0.png", image)
    views = load_subject(root, resolution=2)
    small = views.images[0]
    assert small.shape == (2, 2, 4)
    assert torch.allclose(small[0, 0], torch.tensor([1.0, 0.0, 0.0, 0.25]))
    assert torch.allclose(small[1, 1], torch.tensor([0.0, 0.0, 1.0, 128 / 255]), atol=1e-6)
    assert small[0, 1, 3] == 0.0
    white = views.composite()
    assert torch.allclose(white[0, 0, 0], torch.tensor([1.0, 0.75, 0.75]))
    assert torch.allclose(views.composite(0.0)[0, 1, 1], torch.tensor([0.0, 0.0, 128 / 255]), atol=1e-6)


def test_list_subjects(tmp_path):
    for name in ("b", "a"):
        make_subject(tmp_path / "dir" / name, orbit(1, 3.0))
    (tmp_path / "dir" / "notes").mkdir()
    assert list_subjects(tmp_path / "dir") == [tmp_path / "dir" / "a", tmp_path / "dir" / "b"]
    assert list_subjects(tmp_path / "dir" / "a") == [tmp_path / "dir" / "a"]
    index = {"subjects": [{"id": "b", "split": "train"}, {"id": "a", "split": "test"}]}
    (tmp_path / "dir" / "index.json").write_text(json.dumps(index))
    assert list_subjects(tmp_path / "dir") == [tmp_path / "dir" / "b", tmp_path / "dir" / "a"]
    assert list_subjects(tmp_path / "dir", split="test") == [tmp_path / "dir" / "a"]
    index["subjects"].append({"id": "../escape"})
    (tmp_path / "dir" / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="index.json"):
        list_subjects(tmp_path / "dir")
    with pytest.raises(DataError, match="no subject folders"):
        list_subjects(tmp_path / "dir" / "notes")


# ---------------------------------------------------------------------------------------------
# Bad folders: one DataError line naming the file
# ---------------------------------------------------------------------------------------------


def _edit(key_path, value):
    """Set doc[key_path...] = value in transforms.json (None value with `delete` removes)."""
    def apply(root: Path) -> None:
        doc = json.loads((root / "transforms.json").read_text())
        target = doc
        for key in key_path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[key_path[-1]]
        else:
            target[key_path[-1]] = value
        (root / "transforms.json").write_text(json.dumps(doc))
    return apply


def _write(name: str, data: bytes | str):
    def apply(root: Path) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return apply


def _remove(name: str):
    return lambda root: (root / name).unlink()


def _truncate(root: Path) -> None:
    path = root / "train" / "r_1.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 30])       # loses IEND and the end of the pixel data


_DELETE = object()
_I = np.eye(4).tolist()
_SHEAR = [[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]
_MIRROR = [[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]
_SINGULAR = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 4], [0, 0, 0, 1]]
_BAD_ROW = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0.5, 1]]

BAD = {
    "no transforms": (_remove("transforms.json"), "s: no transforms.json"),
    "invalid json": (_write("transforms.json", '{\n  "camera_angle_x": 0.6,\n  "frames": [,]\n}'),
                     "transforms.json: invalid JSON at line 3"),
    "not utf8": (_write("transforms.json", b"\xff\xfe\x00garbage"), "transforms.json: not UTF-8"),
    "not an object": (_write("transforms.json", "[1, 2]"), "transforms.json: must hold a JSON object"),
    "fov missing": (_edit(["camera_angle_x"], _DELETE), "transforms.json: no camera_angle_x"),
    "fov negative": (_edit(["camera_angle_x"], -0.5), "transforms.json: camera_angle_x"),
    "fov string": (_edit(["camera_angle_x"], "wide"), "transforms.json: camera_angle_x"),
    "fov nan": (_edit(["camera_angle_x"], float("nan")), "transforms.json: camera_angle_x"),
    "fov too wide": (_edit(["camera_angle_x"], 3.5), "transforms.json: camera_angle_x"),
    "fov bool": (_edit(["camera_angle_x"], True), "transforms.json: camera_angle_x"),
    "fl_x zero": (lambda r: (_edit(["camera_angle_x"], _DELETE)(r), _edit(["fl_x"], 0)(r)), "fl_x"),
    "frames missing": (_edit(["frames"], _DELETE), 'transforms.json: "frames" is missing'),
    "frames empty": (_edit(["frames"], []), 'transforms.json: "frames" is not a non-empty list'),
    "frames not list": (_edit(["frames"], {"a": 1}), 'transforms.json: "frames" is not'),
    "frame not object": (_edit(["frames", 1], "r_1.png"), "transforms.json: frame 1 is not an object"),
    "no file_path": (_edit(["frames", 1, "file_path"], _DELETE), "frame 1 has no file_path"),
    "no matrix": (_edit(["frames", 0, "transform_matrix"], _DELETE), "frame 0 has no transform_matrix"),
    "file_path number": (_edit(["frames", 0, "file_path"], 7), "file_path must be a non-empty string"),
    "matrix 3x3": (_edit(["frames", 0, "transform_matrix"], np.eye(3).tolist()), "4x4"),
    "matrix 4x3": (_edit(["frames", 0, "transform_matrix"], np.eye(4)[:, :3].tolist()), "4x4"),
    "matrix string": (_edit(["frames", 0, "transform_matrix", 1, 2], "0"), "non-number"),
    "matrix nan": (_edit(["frames", 0, "transform_matrix", 0, 3], float("nan")), "NaN"),
    "matrix inf": (_edit(["frames", 0, "transform_matrix", 2, 3], float("inf")), "infinity"),
    "matrix huge int": (_edit(["frames", 0, "transform_matrix", 2, 3], 10**400), "non-number"),
    "matrix last row": (_edit(["frames", 0, "transform_matrix"], _BAD_ROW), "last row"),
    "matrix singular": (_edit(["frames", 0, "transform_matrix"], _SINGULAR), "singular"),
    "matrix shear": (_edit(["frames", 0, "transform_matrix"], _SHEAR), "not orthonormal"),
    "matrix mirror": (_edit(["frames", 0, "transform_matrix"], _MIRROR), "mirror"),
    "absolute path": (_edit(["frames", 0, "file_path"], "/etc/passwd"), "is absolute"),
    "windows absolute": (_edit(["frames", 0, "file_path"], "C:\\x\\r_0.png"), "is absolute"),
    "parent escape": (_edit(["frames", 0, "file_path"], "../outside.png"), "outside the subject folder"),
    "nested escape": (_edit(["frames", 0, "file_path"], "train/../../s/train/r_0.png"), "outside"),
    "folder itself": (_edit(["frames", 0, "file_path"], "train/.."), "names the subject folder itself"),
    "bad split": (_edit(["frames", 0, "split"], "holdout"), "split must be one of"),
    "image missing": (_remove("train/r_2.png"), "frame 2 ('./train/r_2.png'): image './train/r_2.png' not"),
    "not an image": (_write("train/r_1.png", "hello, I am text"), "r_1.png: not a readable image"),
    "truncated": (_truncate, "r_1.png: image is truncated or corrupt"),
    "mixed sizes": (lambda r: write_image(r / "train" / "r_2.png", np.zeros((5, 4, 4), np.uint8)),
                    "r_2.png: image is 4x5 but"),
    "zero size": (_write("train/r_1.png", png_header(0, 4)), "r_1.png:"),
    "huge": (_write("train/r_0.png", png_header(9000, 9000)), "r_0.png: image is 9000x9000, larger"),
    "bomb": (_write("train/r_0.png", png_header(20000, 20000)), "r_0.png: image too large"),
    "rodin block": (_edit(["rodin"], {"up": "w"}), '"rodin".up must be one of'),
    "rodin bound": (_edit(["rodin"], {"bound": -1}), '"rodin".bound must be'),
    "rodin bound tiny": (_edit(["rodin"], {"bound": 1e-200}), 'transforms.json: "rodin".bound 1e-200 puts'),
    "portrait missing": (_edit(["portrait"], {"file_path": "portrait.png"}), "portrait: image"),
    "attributes": (_write("attributes.json", "{caption"), "attributes.json: invalid JSON at line 1"),
    "attributes list": (_write("attributes.json", "[]"), "attributes.json: must hold a JSON object"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_one_dataerror_line_naming_the_file(tmp_path, case):
    mutate, expected = BAD[case]
    root = tmp_path / "s"
    make_subject(root, orbit(3, 3.0))
    mutate(root)
    with pytest.raises(DataError) as info:
        load_subject(root)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    assert str(root) in message                  # the file (or folder) is named in full


def test_missing_folder_and_split_disagreement(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_subject(tmp_path / "nowhere")
    make_subject(tmp_path / "s", orbit(6, 3.0), layout="splits")
    doc = json.loads((tmp_path / "s" / "transforms_test.json").read_text())
    doc["camera_angle_x"] = 0.9
    (tmp_path / "s" / "transforms_test.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="transforms_test.json: camera_angle_x 0.9 differs"):
        load_subject(tmp_path / "s")


def test_upscaling_and_bad_arguments_are_refused(tmp_path):
    make_subject(tmp_path / "s", orbit(2, 3.0))
    with pytest.raises(DataError, match="smaller than the requested resolution 8"):
        load_subject(tmp_path / "s", resolution=8)
    with pytest.raises(RodinError, match="up must be"):
        load_subject(tmp_path / "s", up="sideways")
    with pytest.raises(RodinError, match="bound must be"):
        load_subject(tmp_path / "s", bound=0.0)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)

FIELD_PATHS = [
    [], ["camera_angle_x"], ["frames"], ["frames", 0], ["frames", 0, "file_path"],
    ["frames", 1, "transform_matrix"], ["frames", 1, "transform_matrix", 2],
    ["frames", 1, "transform_matrix", 0, 3], ["frames", 0, "split"], ["rodin"], ["rodin", "up"],
    ["rodin", "bound"], ["rodin", "center"], ["portrait"], ["portrait", "transform_matrix"], ["fl_x"],
]


@pytest.fixture(scope="module")
def subject_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("prop") / "s"
    make_subject(root, orbit(2, 3.0), size=(2, 2))
    write_image(root / "portrait.png", np.zeros((2, 2, 4), np.uint8))
    return root


def _base_doc(root: Path) -> dict:
    return {"camera_angle_x": FOV,
            "frames": [{"file_path": f"./train/r_{i}", "transform_matrix": m.tolist()}
                       for i, m in enumerate(orbit(2, 3.0))],
            "rodin": {"up": "y", "bound": 1.0},
            "portrait": {"file_path": "portrait.png", "transform_matrix": np.eye(4).tolist()}}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELD_PATHS), value=json_values, drop_field=st.booleans())
def test_random_fields_raise_only_dataerror(subject_dir, field, value, drop_field):
    doc = _base_doc(subject_dir)
    if not field:
        doc = value
    else:
        target = doc
        for key in field[:-1]:
            target = target[key]
        if drop_field and isinstance(target, dict):
            target.pop(field[-1], None)
        else:
            target[field[-1]] = value
    (subject_dir / "transforms.json").write_text(json.dumps(doc))
    try:
        views = load_subject(subject_dir)
    except DataError as err:
        assert "\n" not in str(err)
    else:
        assert torch.isfinite(views.c2w).all() and torch.isfinite(views.world_from_file).all()


@st.composite
def rigid_matrices(draw):
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    if np.linalg.norm(q) < 1e-3:
        q = np.array([1.0, 0.0, 0.0, 0.0])
    w, x, y, z = q / np.linalg.norm(q)
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    scale = draw(st.sampled_from([1.0, 1.0, 0.5, 3.0]))
    m = np.eye(4)
    m[:3, :3] = rotation * scale
    m[:3, 3] = draw(st.lists(st.floats(-100, 100), min_size=3, max_size=3))
    return np.round(m, 7)                       # as a JSON writer with 7 digits would leave it


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mats=st.lists(rigid_matrices(), min_size=2, max_size=2), up=st.sampled_from(["auto", "y", "z", "-x"]),
       bound=st.sampled_from([None, 1.0, 2.5]))
def test_valid_rigid_matrices_always_load(subject_dir, mats, up, bound):
    doc = {"camera_angle_x": FOV, "frames": [{"file_path": f"train/r_{i}.png", "transform_matrix": m.tolist()}
                                             for i, m in enumerate(mats)]}
    (subject_dir / "transforms.json").write_text(json.dumps(doc))
    views = load_subject(subject_dir, up=up, bound=bound)
    c2w = views.c2w.double()
    assert torch.isfinite(c2w).all() and torch.isfinite(views.world_from_file).all()
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3, dtype=torch.float64).expand(2, 3, 3),
                          atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(2, dtype=torch.float64), atol=1e-5)
    # Camera positions are the file's positions under the recorded similarity.
    file_pos = torch.from_numpy(np.stack(mats))[:, :, 3]
    w = views.world_from_file.double()
    mapped = (w @ file_pos.T).T[:, :3]
    float32_error = 1e-6 * (1 + float(w.abs().max() * file_pos.abs().max()))  # w is float32
    assert torch.allclose(mapped, c2w[:, :3, 3], atol=10 * float32_error)
