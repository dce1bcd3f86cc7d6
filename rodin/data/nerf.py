"""One loader for any NeRF-synthetic subject folder: ours, Blender's, nerfstudio's.

A subject folder holds `transforms.json` (or the original layout's `transforms_train.json`,
`transforms_val.json`, `transforms_test.json`) and the images it names. Our own folders add a
`"rodin"` block (`{"up": "y", "bound": 1.0}`), a `"portrait"` entry, `portrait.png`,
`attributes.json` and `mesh.ply`.

Everything is brought into the project's world (DESIGN.md): the avatar in [-1, 1]^3, y up. A point
of the file maps as `p_ours = R (p_file - centre) / bound`, where

- `R` turns the file's up axis into +y: given (`up="y"`, `"z"` for Blender, any signed axis such
  as `"-y"`), or found (`"auto"`: the `"rodin"` block's, else the world axis nearest the cameras'
  mean up vector, with its sign);
- `bound` is the scene's half-size in file units, and `centre` its middle: given (argument or
  `"rodin"` block, centre at the file's origin unless the block says `"center"`), or derived from
  the cameras (centre = the least-squares point nearest all optical axes, bound = median camera
  distance to it x sin(fov_x / 2), the radius of the sphere every view sees whole).

Cameras follow: rotation `R Rc`, position `R (t - centre) / bound`. The 4x4 similarity is kept as
`world_from_file` so that results can be mapped back. Every expected failure is a `DataError` with
one line that names the file, the problem and what to do.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from rodin.errors import ConfigError, DataError

TRANSFORMS = "transforms.json"
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
MAX_SIDE = 8192                   # pixels; larger images are refused before they are decoded
MAX_TRANSLATION = 1e9             # file units; a camera farther away than this is corrupt data
MAX_CAMERA_DISTANCE = 1e6         # project units; a given bound that puts cameras farther is wrong
_ROW_TOL = 1e-4                   # last row of a matrix vs [0, 0, 0, 1]
_ORTHO_TOL = 2e-3                 # |Q^T Q - I| for the (scale-free) rotation part
_UP_AXES = {"x": 0, "y": 1, "z": 2}


# --------------------------------------------------------------------------------------------
# What is read
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortraitEntry:
    """The `"portrait"` entry of our own transforms.json (camera in file coordinates)."""

    file_path: Path
    c2w: Tensor | None            # (4, 4) float64, file world, rotation orthonormalised
    fov_x: float | None


@dataclass(frozen=True)
class Transforms:
    """The validated parse of a subject folder, without decoding any image."""

    root: Path
    sources: tuple[Path, ...]     # the transforms files read, in order
    fov_x: float                  # horizontal field of view, radians
    file_paths: tuple[Path, ...]  # one per frame, inside root, extension resolved
    splits: tuple[str, ...]       # one per frame: "train", "val" or "test"
    c2w: Tensor                   # (N, 4, 4) float64, file world, rotation orthonormalised
    rodin: dict | None            # our own block, validated ("up", "bound", "center" when given)
    portrait_entry: PortraitEntry | None
    portrait: Path | None         # the portrait image (from the entry, else portrait.png)
    attributes: dict | None       # attributes.json, parsed
    mesh: Path | None             # mesh.ply

    def __len__(self) -> int:
        return len(self.file_paths)

    def world_from_file(self, *, up: str = "auto", bound: float | None = None) -> Tensor:
        """The 4x4 similarity (float64) that takes file coordinates into the project's world."""
        return _similarity(self, up=up, bound=bound).matrix()


@dataclass(frozen=True)
class SubjectViews:
    """The views of one subject in the project's world, ready for fitting."""

    name: str
    root: Path
    images: Tensor                # (N, H, W, 4) float32 in [0, 1], straight (not premultiplied) RGBA
    c2w: Tensor                   # (N, 4, 4) float32, project world
    fov_x: float                  # radians
    splits: tuple[str, ...]       # per frame
    file_paths: tuple[Path, ...]
    world_from_file: Tensor       # (4, 4) float32: p_ours = world_from_file @ p_file
    portrait: Path | None
    portrait_c2w: Tensor | None   # (4, 4) float32, project world
    portrait_fov_x: float | None
    attributes: dict | None
    mesh: Path | None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def caption(self) -> str | None:
        caption = (self.attributes or {}).get("caption")
        return caption if isinstance(caption, str) else None

    def composite(self, background: float = 1.0) -> Tensor:
        """RGB (N, H, W, 3) over a uniform background (white unless told otherwise)."""
        rgb, alpha = self.images[..., :3], self.images[..., 3:]
        return rgb * alpha + background * (1.0 - alpha)

    def split(self, name: str) -> Tensor:
        """Indices of the frames of one split."""
        return torch.tensor([i for i, s in enumerate(self.splits) if s == name], dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Small validators (each failure: one line, the file, the problem, the fix)
# --------------------------------------------------------------------------------------------


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> float | None:
    """A finite float from a JSON number, else None (bools, strings, NaN, inf, 1e400 are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):       # name too long, NUL byte, unencodable character
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _load_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err}); check the file's permissions") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save it as UTF-8 JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno} ({err.msg}); "
                        "fix the file") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply; fix the file") from None


def _relative_inside(root: Path, raw: Any, where: str, field: str) -> Path:
    """`root / raw`, refusing paths that are absolute or climb out of root."""
    if not isinstance(raw, str) or not raw.strip():
        raise DataError(f"{where}: {field} must be a non-empty string (got {_short(raw)}); "
                        "give the image path relative to the subject folder")
    text = raw.replace("\\", "/")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(raw).drive or text.startswith("~"):
        raise DataError(f"{where}: {field} {_short(raw)} is absolute; "
                        "give it relative to the subject folder")
    normal = os.path.normpath(text)
    if normal == ".":
        raise DataError(f"{where}: {field} {_short(raw)} names the subject folder itself; "
                        "give the image path relative to it")
    if normal == ".." or normal.startswith("../"):
        raise DataError(f"{where}: {field} {_short(raw)} points outside the subject folder; "
                        "keep every image inside it")
    return root / normal


def _resolve_image(root: Path, raw: Any, where: str, field: str = "file_path") -> Path:
    """The image a file_path names, trying the usual extensions when it has none ("./train/r_0")."""
    path = _relative_inside(root, raw, where, field)
    if _is_file(path):
        return path
    for suffix in IMAGE_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        if _is_file(candidate):
            return candidate
    raise DataError(f"{where}: image {_short(raw)} not found (looked for {path} and with .png/.jpg); "
                    "render it or drop the frame")


def _parse_matrix(value: Any, where: str) -> np.ndarray:
    """A camera-to-world matrix: 4x4 (or 3x4) finite numbers, last row [0 0 0 1], rotation part
    orthonormal up to a uniform positive scale. Returns 4x4 float64 with the scale removed."""
    fix = "write a 4x4 camera-to-world matrix (rotation and translation)"
    if not isinstance(value, list) or len(value) not in (3, 4):
        raise DataError(f"{where}: transform_matrix must be a 4x4 list of numbers "
                        f"(got {_short(value)}); {fix}")
    rows = []
    for row in value:
        if not isinstance(row, list) or len(row) != 4:
            raise DataError(f"{where}: transform_matrix must be a 4x4 list of numbers "
                            f"(a row is {_short(row)}); {fix}")
        numbers = [_number(x) for x in row]
        if any(x is None for x in numbers):
            raise DataError(f"{where}: transform_matrix holds a non-number, NaN or infinity "
                            f"(row {_short(row)}); {fix}")
        rows.append(numbers)
    if len(rows) == 3:
        rows.append([0.0, 0.0, 0.0, 1.0])
    m = np.array(rows, dtype=np.float64)
    if np.abs(m[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > _ROW_TOL:
        raise DataError(f"{where}: transform_matrix's last row is {m[3].tolist()}, not [0, 0, 0, 1]; {fix}")
    if np.abs(m[:3, 3]).max() > MAX_TRANSLATION:
        raise DataError(f"{where}: camera position {m[:3, 3].tolist()} is absurdly far; {fix}")
    rot = m[:3, :3]
    if np.abs(rot).max() > 1e6:
        raise DataError(f"{where}: transform_matrix's rotation part holds absurd values; {fix}")
    scale = float(np.linalg.norm(rot, axis=0).mean())
    det = float(np.linalg.det(rot)) if scale > 0 else 0.0
    if not (scale > 1e-12 and math.isfinite(det) and abs(det) > 1e-9 * scale**3):
        raise DataError(f"{where}: transform_matrix's rotation part is singular; {fix}")
    if det < 0:
        raise DataError(f"{where}: transform_matrix's rotation part is a mirror (determinant < 0), "
                        f"not a rotation; {fix}")
    q = rot / det ** (1.0 / 3.0)
    error = float(np.abs(q.T @ q - np.eye(3)).max())
    if not error <= _ORTHO_TOL:
        raise DataError(f"{where}: transform_matrix's rotation part is not orthonormal "
                        f"(off by {error:.3g}; sheared or non-uniformly scaled); {fix}")
    u, _, vt = np.linalg.svd(q)
    m[:3, :3] = u @ vt
    m[3] = (0.0, 0.0, 0.0, 1.0)
    return m


def _fov_from(doc: dict, where: str, image: Path | None = None) -> float | None:
    """Horizontal FOV from camera_angle_x, or from nerfstudio's fl_x and w; None when neither."""
    fix = "give camera_angle_x (horizontal field of view, radians) or fl_x and w (pixels)"
    if "camera_angle_x" in doc:
        fov = _number(doc["camera_angle_x"])
        if fov is None or not 0.0 < fov < math.pi:
            raise DataError(f"{where}: camera_angle_x must be a number of radians in (0, pi) "
                            f"(got {_short(doc['camera_angle_x'])}); {fix}")
        return fov
    if "fl_x" in doc:
        focal = _number(doc["fl_x"])
        if focal is None or focal <= 0.0:
            raise DataError(f"{where}: fl_x must be a positive number of pixels "
                            f"(got {_short(doc['fl_x'])}); {fix}")
        if "w" in doc:
            width = _number(doc["w"])
            if width is None or width <= 0.0:
                raise DataError(f"{where}: w must be a positive number of pixels "
                                f"(got {_short(doc['w'])}); {fix}")
        elif image is not None and (image_width := _image_width(image)) is not None:
            width = float(image_width)
        else:
            raise DataError(f"{where}: fl_x is given without w; {fix}")
        fov = 2.0 * math.atan(width / (2.0 * focal))
        if not 0.0 < fov < math.pi:
            raise DataError(f"{where}: fl_x {focal} and w {width} give no usable field of view; {fix}")
        return fov
    return None


def _image_width(path: Path) -> int | None:
    """Width from the image header only (for nerfstudio files that give fl_x but no w)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                return int(image.size[0])
    except Exception:       # Pillow signals broken files with many types; the decode reports it
        return None


def _parse_rodin(value: Any, where: str) -> dict:
    fix = 'write e.g. "rodin": {"up": "y", "bound": 1.0}'
    if not isinstance(value, dict):
        raise DataError(f"{where}: the \"rodin\" block must be an object (got {_short(value)}); {fix}")
    block = dict(value)
    if "up" in block:
        if not isinstance(block["up"], str) or _parse_up(block["up"]) is None:
            raise DataError(f"{where}: \"rodin\".up must be one of x, y, z, -x, -y, -z "
                            f"(got {_short(block['up'])}); {fix}")
    if "bound" in block:
        bound = _number(block["bound"])
        if bound is None or bound <= 0.0:
            raise DataError(f"{where}: \"rodin\".bound must be a positive number "
                            f"(got {_short(block['bound'])}); {fix}")
        block["bound"] = bound
    for key in ("center", "centre"):
        if key in block:
            centre = block.pop(key)
            numbers = [_number(x) for x in centre] if isinstance(centre, list) else []
            if len(numbers) != 3 or any(x is None for x in numbers):
                raise DataError(f"{where}: \"rodin\".{key} must be three numbers "
                                f"(got {_short(centre)}); {fix}")
            block["center"] = numbers
    return block


def _parse_up(text: str) -> tuple[int, float] | None:
    """"z" / "+z" / "-z" -> (axis, sign); None when not an axis."""
    text = text.strip().lower()
    sign = -1.0 if text.startswith("-") else 1.0
    axis = _UP_AXES.get(text.lstrip("+-"))
    return None if axis is None or len(text.lstrip("+-")) != 1 or len(text) > 2 else (axis, sign)


# --------------------------------------------------------------------------------------------
# read_transforms
# --------------------------------------------------------------------------------------------


def _sources(path: Path) -> tuple[Path, list[tuple[Path, str | None]]]:
    """The subject folder and the transforms files to read, each with the split it implies."""
    try:
        exists = path.exists()
    except (OSError, ValueError):
        exists = False
    if not exists:
        raise DataError(f"{path}: no such folder; give the path of a subject folder with transforms.json")
    if _is_file(path):
        split = path.stem[len("transforms_"):] if path.stem.startswith("transforms_") else None
        return path.parent, [(path, split if split in SPLITS else None)]
    if not _is_dir(path):
        raise DataError(f"{path}: not a folder; give the path of a subject folder with transforms.json")
    if _is_file(path / TRANSFORMS):
        return path, [(path / TRANSFORMS, None)]
    found = [(path / f"transforms_{s}.json", s) for s in SPLITS if _is_file(path / f"transforms_{s}.json")]
    if not found:
        raise DataError(f"{path}: no transforms.json (nor transforms_train/val/test.json); "
                        "this is not a NeRF-synthetic subject folder")
    return path, found


def read_transforms(path: Path | str) -> Transforms:
    """Parse and check a subject folder's cameras and files, without decoding images (fast).

    `path` is a subject folder, or one transforms file in it.
    """
    root, sources = _sources(Path(path))
    file_paths: list[Path] = []
    splits: list[str] = []
    matrices: list[np.ndarray] = []
    fovs: list[tuple[float, Path]] = []
    rodin: dict | None = None
    portrait_entry: PortraitEntry | None = None
    for source, file_split in sources:
        doc = _load_json(source)
        if not isinstance(doc, dict):
            raise DataError(f"{source}: must hold a JSON object with camera_angle_x and frames "
                            f"(got {type(doc).__name__}); fix the file")
        frames = doc.get("frames")
        if not isinstance(frames, list) or not frames:
            what = "missing" if "frames" not in doc else f"not a non-empty list ({_short(frames)})"
            raise DataError(f"{source}: \"frames\" is {what}; list the views, each with file_path "
                            "and transform_matrix")
        first_paths = len(file_paths)
        for i, frame in enumerate(frames):
            where = f"{source}: frame {i}"
            if not isinstance(frame, dict):
                raise DataError(f"{where} is not an object (got {_short(frame)}); "
                                "give file_path and transform_matrix")
            for key in ("file_path", "transform_matrix"):
                if key not in frame:
                    raise DataError(f"{where} has no {key}; give file_path and transform_matrix")
            where = f"{source}: frame {i} ({_short(frame['file_path'], 40)})"
            matrices.append(_parse_matrix(frame["transform_matrix"], where))
            file_paths.append(_resolve_image(root, frame["file_path"], where))
            split = file_split
            if split is None:
                split = frame.get("split", "train")
                if split not in SPLITS:
                    raise DataError(f"{where}: split must be one of {', '.join(SPLITS)} "
                                    f"(got {_short(split)}); fix or drop it")
            splits.append(split)
        fov = _fov_from(doc, str(source), file_paths[first_paths])
        if fov is None:
            fov = _per_frame_fov(frames, source, file_paths[first_paths])
        fovs.append((fov, source))
        if "rodin" in doc and rodin is None:
            rodin = _parse_rodin(doc["rodin"], str(source))
        if "portrait" in doc and portrait_entry is None:
            portrait_entry = _parse_portrait(doc["portrait"], root, str(source))
    fov_x, first = fovs[0]
    for fov, source in fovs[1:]:
        if abs(fov - fov_x) > 1e-6 * max(1.0, fov_x):
            raise DataError(f"{source}: camera_angle_x {fov} differs from {fov_x} in {first}; "
                            "one field of view per subject is supported, re-render or split the subject")
    portrait = portrait_entry.file_path if portrait_entry else None
    if portrait is None and _is_file(root / "portrait.png"):
        portrait = root / "portrait.png"
    attributes = None
    if _is_file(root / "attributes.json"):
        attributes = _load_json(root / "attributes.json")
        if not isinstance(attributes, dict):
            raise DataError(f"{root / 'attributes.json'}: must hold a JSON object (with \"caption\"); "
                            "fix the file")
    mesh = root / "mesh.ply" if _is_file(root / "mesh.ply") else None
    return Transforms(
        root=root, sources=tuple(s for s, _ in sources), fov_x=fov_x, file_paths=tuple(file_paths),
        splits=tuple(splits), c2w=torch.from_numpy(np.stack(matrices)), rodin=rodin,
        portrait_entry=portrait_entry, portrait=portrait, attributes=attributes, mesh=mesh,
    )


def _per_frame_fov(frames: list, source: Path, first_image: Path) -> float:
    """nerfstudio files may give intrinsics per frame: accepted when every frame agrees."""
    fovs = [_fov_from(frame, f"{source}: frame {i}", first_image) for i, frame in enumerate(frames)]
    if any(f is None for f in fovs):
        raise DataError(f"{source}: no camera_angle_x; give camera_angle_x (horizontal field of view, "
                        "radians) or fl_x and w (pixels)")
    if max(fovs) - min(fovs) > 1e-6 * max(1.0, max(fovs)):
        raise DataError(f"{source}: frames have different intrinsics (fields of view {min(fovs):.6g} to "
                        f"{max(fovs):.6g}); one field of view per subject is supported")
    return float(fovs[0])


def _parse_portrait(value: Any, root: Path, where: str) -> PortraitEntry:
    fix = 'write "portrait": {"file_path", "camera_angle_x", "transform_matrix"}'
    if not isinstance(value, dict) or "file_path" not in value:
        raise DataError(f"{where}: \"portrait\" must be an object with file_path (got {_short(value)}); {fix}")
    here = f"{where}: portrait"
    path = _resolve_image(root, value["file_path"], here)
    c2w = None
    if "transform_matrix" in value:
        c2w = torch.from_numpy(_parse_matrix(value["transform_matrix"], here))
    fov = None
    if "camera_angle_x" in value:
        fov = _fov_from({"camera_angle_x": value["camera_angle_x"]}, here)
    return PortraitEntry(file_path=path, c2w=c2w, fov_x=fov)


# --------------------------------------------------------------------------------------------
# The similarity into the project's world
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Similarity:
    rotation: np.ndarray          # (3, 3)
    centre: np.ndarray            # (3,) file coordinates
    bound: float                  # file units per project unit

    def matrix(self) -> Tensor:
        m = np.eye(4)
        m[:3, :3] = self.rotation / self.bound
        m[:3, 3] = -self.rotation @ self.centre / self.bound
        return torch.from_numpy(m)

    def cameras(self, c2w: np.ndarray) -> np.ndarray:
        """(..., 4, 4) camera-to-world in file coordinates -> project world (still rigid)."""
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[..., :3, :3] = self.rotation @ c2w[..., :3, :3]
        out[..., :3, 3] = ((c2w[..., :3, 3] - self.centre) @ self.rotation.T) / self.bound
        return out


def _up_rotation(axis: int, sign: float) -> np.ndarray:
    """The rotation that takes the file's (signed) up axis to +y."""
    table = {
        (1, 1.0): [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        (1, -1.0): [[1, 0, 0], [0, -1, 0], [0, 0, -1]],     # 180 degrees about x
        (2, 1.0): [[1, 0, 0], [0, 0, 1], [0, -1, 0]],       # Blender: (x, y, z) -> (x, z, -y)
        (2, -1.0): [[1, 0, 0], [0, 0, -1], [0, 1, 0]],
        (0, 1.0): [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
        (0, -1.0): [[0, 1, 0], [-1, 0, 0], [0, 0, 1]],
    }
    return np.array(table[(axis, sign)], dtype=np.float64)


def _centre_from_cameras(c2w: np.ndarray) -> np.ndarray:
    """The point nearest all optical axes (least squares); when the axes are (nearly) parallel, the
    mean of the points where each axis passes nearest the file's origin, or the origin itself."""
    origins = c2w[:, :3, 3]
    dirs = -c2w[:, :3, 2]
    projectors = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]   # (N, 3, 3)
    a = projectors.sum(0)
    b = np.einsum("nij,nj->i", projectors, origins)
    eig = np.linalg.eigvalsh(a)
    if eig[0] > 1e-3 * eig[-1]:
        centre = np.linalg.solve(a, b)
        if np.median(np.einsum("ni,ni->n", centre[None] - origins, dirs)) > 0:
            return centre
    ahead = np.einsum("ni,ni->n", -origins, dirs)
    front = ahead > 0
    if front.any():
        return (origins[front] + ahead[front, None] * dirs[front]).mean(0)
    return np.zeros(3)


def _checked(similarity: _Similarity, c2w: np.ndarray, what: str) -> _Similarity:
    """A given bound must leave the cameras at a sane distance (finite in float32, too)."""
    far = float(np.abs(similarity.cameras(c2w)[:, :3, 3]).max())
    if not far <= MAX_CAMERA_DISTANCE:
        raise DataError(f"{what} puts cameras {far:.3g} avatar half-sizes away; "
                        "give the scene's half-size in file units (or leave it out to derive it)")
    return similarity


def _similarity(t: Transforms, *, up: str = "auto", bound: float | None = None) -> _Similarity:
    c2w = t.c2w.numpy()
    block = t.rodin or {}
    if not isinstance(up, str) or (up != "auto" and _parse_up(up) is None):
        raise ConfigError(f"up must be auto, x, y, z, -x, -y or -z (got {_short(up)})")
    if up == "auto":
        if "up" in block:
            axis, sign = _parse_up(block["up"])
        else:
            mean_up = c2w[:, :3, 1].mean(0)
            axis = int(np.abs(mean_up).argmax())
            sign = 1.0 if mean_up[axis] >= 0 or abs(mean_up[axis]) < 1e-6 else -1.0
            if np.abs(mean_up).max() < 1e-6:
                axis, sign = 1, 1.0
    else:
        axis, sign = _parse_up(up)
    rotation = _up_rotation(axis, sign)
    if bound is not None:
        value = _number(bound)
        if value is None or value <= 0.0:
            raise ConfigError(f"bound must be a positive number (got {_short(bound)})")
        centre = np.array(block.get("center", (0.0, 0.0, 0.0)), dtype=np.float64)
        return _checked(_Similarity(rotation, centre, value), c2w, f"{t.root}: bound={value}")
    if "bound" in block:
        centre = np.array(block.get("center", (0.0, 0.0, 0.0)), dtype=np.float64)
        return _checked(_Similarity(rotation, centre, float(block["bound"])), c2w,
                        f"{t.sources[0]}: \"rodin\".bound {block['bound']}")
    centre = np.array(block["center"], dtype=np.float64) if "center" in block else _centre_from_cameras(c2w)
    distance = float(np.median(np.linalg.norm(c2w[:, :3, 3] - centre, axis=1)))
    derived = distance * math.sin(0.5 * t.fov_x)
    scale = max(1.0, float(np.abs(c2w[:, :3, 3]).max()))
    # All cameras at one point: no scale to be read from them; keep the file's units.
    return _Similarity(rotation, centre, derived if derived > 1e-6 * scale else 1.0)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _open_image(path: Path, expected: tuple[int, int] | None, first: Path | None) -> Image.Image:
    """Open (header only) and check the size, before anything is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(path)
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image too large (over {MAX_SIDE}x{MAX_SIDE}); "
                        "downscale it before loading") from None
    except Exception as err:        # Pillow reports unreadable files with many exception types
        raise DataError(f"{path}: not a readable image ({type(err).__name__}); "
                        "re-render or re-export it as PNG or JPEG") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise DataError(f"{path}: image is empty ({width}x{height}); re-render it")
    if width > MAX_SIDE or height > MAX_SIDE:
        image.close()
        raise DataError(f"{path}: image is {width}x{height}, larger than {MAX_SIDE}x{MAX_SIDE}; "
                        "downscale it before loading")
    if expected is not None and (width, height) != expected:
        image.close()
        raise DataError(f"{path}: image is {width}x{height} but {first} is {expected[0]}x{expected[1]}; "
                        "all views of a subject must share one size")
    return image


def _decode(image: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 4) float32 straight RGBA in [0, 1] from any PNG/JPEG mode (no alpha: alpha = 1)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            mode = image.mode
            if mode.startswith("I;16") or mode in ("I", "F"):
                grey = np.asarray(image, dtype=np.float32)
                grey = grey if mode == "F" else grey / 65535.0
                grey = np.clip(grey, 0.0, 1.0)
                rgba = np.concatenate([np.repeat(grey[..., None], 3, -1), np.ones_like(grey)[..., None]], -1)
            else:
                rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except Exception as err:        # truncated data, bad chunks, unsupported modes
        raise DataError(f"{path}: image is truncated or corrupt ({type(err).__name__}: "
                        f"{_short(str(err), 50)}); re-render or re-export it") from None
    finally:
        image.close()
    if rgba.shape[:2] != (image.size[1], image.size[0]):
        raise DataError(f"{path}: decoded to an unexpected shape {rgba.shape}; re-export it as PNG")
    return rgba


def _target_size(width: int, height: int, resolution: int | None, path: Path) -> tuple[int, int]:
    """(width, height) after downscaling so that the width is `resolution` (aspect kept)."""
    if resolution is None or resolution == width:
        return width, height
    if resolution > width:
        raise DataError(f"{path}: images are {width}x{height}, smaller than the requested resolution "
                        f"{resolution}; render larger views or ask for at most {width}")
    return resolution, max(1, round(height * resolution / width))


def _downscale(rgba: np.ndarray, size: tuple[int, int]) -> Tensor:
    """Area (box) filter on premultiplied colour, so transparent pixels' colours do not bleed."""
    image = torch.from_numpy(rgba)
    if (image.shape[1], image.shape[0]) == size:
        return image
    alpha = image[..., 3:]
    premultiplied = torch.cat([image[..., :3] * alpha, alpha], -1).permute(2, 0, 1)[None]
    small = F.interpolate(premultiplied, size=(size[1], size[0]), mode="area")[0].permute(1, 2, 0)
    alpha = small[..., 3:]
    rgb = torch.where(alpha > 1e-6, small[..., :3] / alpha.clamp_min(1e-6), torch.zeros_like(small[..., :3]))
    return torch.cat([rgb.clamp(0.0, 1.0), alpha.clamp(0.0, 1.0)], -1)


# --------------------------------------------------------------------------------------------
# load_subject / list_subjects
# --------------------------------------------------------------------------------------------


def load_subject(path: Path | str, *, up: str = "auto", bound: float | None = None,
                 resolution: int | None = None) -> SubjectViews:
    """Read a subject folder into the project's world (see the module docstring).

    `resolution`: downscale the views so that their width is this many pixels (area filter).
    """
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or resolution <= 0):
        raise ConfigError(f"resolution must be a positive integer (got {_short(resolution)})")
    t = read_transforms(path)
    similarity = _similarity(t, up=up, bound=bound)
    images: Tensor | None = None
    expected: tuple[int, int] | None = None
    size: tuple[int, int] | None = None
    for i, file in enumerate(t.file_paths):
        image = _open_image(file, expected, t.file_paths[0])
        if expected is None:
            expected = image.size
            try:
                size = _target_size(*expected, resolution, file)
            except DataError:
                image.close()
                raise
            images = torch.empty(len(t), size[1], size[0], 4, dtype=torch.float32)
        images[i] = _downscale(_decode(image, file), size)   # _decode closes the image
    c2w = torch.from_numpy(similarity.cameras(t.c2w.numpy())).float()
    entry = t.portrait_entry
    portrait_c2w = None
    portrait_fov = None
    if entry is not None and entry.c2w is not None:
        portrait_c2w = torch.from_numpy(similarity.cameras(entry.c2w.numpy())).float()
        portrait_fov = entry.fov_x if entry.fov_x is not None else t.fov_x
    return SubjectViews(
        name=t.root.resolve().name or str(t.root), root=t.root, images=images, c2w=c2w, fov_x=t.fov_x,
        splits=t.splits, file_paths=t.file_paths, world_from_file=similarity.matrix().float(),
        portrait=t.portrait, portrait_c2w=portrait_c2w, portrait_fov_x=portrait_fov,
        attributes=t.attributes, mesh=t.mesh,
    )


def is_subject(path: Path) -> bool:
    """Whether a folder looks like a NeRF-synthetic subject (has a transforms file)."""
    return any(_is_file(path / name) for name in (TRANSFORMS, *(f"transforms_{s}.json" for s in SPLITS)))


def list_subjects(dataset: Path | str, *, split: str | None = None) -> list[Path]:
    """The subject folders of a dataset, in order.

    `dataset` is a dataset folder with index.json (`{"subjects": [{"id", "split"}]}`, subjects in
    `<dataset>/<id>`), a single subject folder, or a folder of subject folders. `split` keeps the
    subjects of one split (index.json only; subjects without a split count as "train").
    """
    root = Path(dataset)
    if not _is_dir(root):
        raise DataError(f"{root}: no such folder; give a dataset folder or a subject folder")
    index = root / "index.json"
    if _is_file(index):
        doc = _load_json(index)
        entries = doc.get("subjects") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise DataError(f"{index}: must hold {{\"subjects\": [{{\"id\", \"split\"}}, ...]}}; fix the file")
        subjects = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "id" not in entry:
                raise DataError(f"{index}: subject {i} has no id (got {_short(entry)}); fix the file")
            folder = _relative_inside(root, entry["id"], f"{index}: subject {i}", "id")
            if not is_subject(folder):
                raise DataError(f"{index}: subject {_short(entry['id'])} has no folder with "
                                f"transforms.json at {folder}; regenerate the dataset")
            if split is None or entry.get("split", "train") == split:
                subjects.append(folder)
        return subjects
    if is_subject(root):
        return [root]
    try:
        children = sorted(p for p in root.iterdir() if _is_dir(p) and is_subject(p))
    except OSError as err:
        raise DataError(f"{root}: cannot list ({err.strerror or err}); check its permissions") from None
    if not children:
        raise DataError(f"{root}: no subject folders (none holds transforms.json) and no index.json; "
                        "give a dataset or subject folder")
    return children


__all__ = [
    "IMAGE_SUFFIXES", "MAX_SIDE", "SPLITS", "PortraitEntry", "SubjectViews", "Transforms", "is_subject",
    "list_subjects", "load_subject", "read_transforms",
]
