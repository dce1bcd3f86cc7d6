"""Render a user's meshes (OBJ, glTF/GLB, FBX, PLY) with Blender into NeRF-synthetic subject folders.

The paper's training data are Blender renders of avatar assets; this is that path for assets a user
owns. Blender is optional: only this module needs it, and only when it runs.

Division of labour. This side finds the meshes, computes every camera (the same placement as the
procedural generator: `rodin.data.synth.subject_cameras`, `rodin.render.cameras.orbit_cameras`),
the light rig and the options, and writes a job file; Blender runs `blender_script.py` (shipped
beside this file) in background mode, one process per batch of meshes, which imports, normalises and
renders RGBA PNGs and reports each mesh on stdout. This side then cleans the PNGs and writes
`attributes.json`, `transforms.json` and the `.complete` marker last, so that a folder is either
complete or redone. A subject folder has the layout of `rodin.data.synth` and loads with
`rodin.data.nerf.load_subject` unchanged.

A mesh that fails to import, has no geometry or crashes Blender is reported and skipped; the rest
go on. Subjects whose marker matches the current options are skipped (resumable).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rodin.data import blender_script
from rodin.data.synth import LIGHTS, MARKER, subject_cameras, subject_complete, subject_split
from rodin.errors import ConfigError, DataError, RodinError
from rodin.io import png_bytes, write_atomic, write_json
from rodin.render.cameras import DEFAULT_FOV_X, DEFAULT_RADIUS, orbit_cameras

GENERATOR = "rodin-blender/1"
FORMAT = "rodin-meshes/1"
SCRIPT = Path(__file__).with_name("blender_script.py")
MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".fbx", ".ply")
ENGINES = ("cycles", "eevee", "workbench")
INSTALL = "install Blender (Debian/Ubuntu: `apt-get install blender python3-numpy`; elsewhere blender.org)"
INSTALL_HINT = f"{INSTALL} or pass --blender /path/to/blender"
EXTENT = 1.0            # the farthest vertex's distance from the centre: in the box and in every view
PORTRAIT_FOV_X = DEFAULT_FOV_X
AMBIENT = 0.22          # uniform grey world light (linear), the studio's fill from everywhere
SUN_ANGLE = math.radians(12.0)   # soft shadows
# The generator's three light directions, neutral white; intensity 1 lights a white surface facing
# it to 1.0 (a Blender sun of strength pi).
STUDIO_LIGHTS = tuple((direction, k) for (direction, _), k in zip(LIGHTS, (0.9, 0.4, 0.4)))
BATCH = 16              # meshes per Blender process at most (a crash loses no more than a restart)


# --- options ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeshRenderOptions:
    """What every subject is rendered with; part of the completion marker."""

    views: int = 32
    resolution: int = 128           # pixels, square views
    portrait_resolution: int = 128
    engine: str = "cycles"
    samples: int = 32               # Cycles paths per pixel / EEVEE and workbench anti-aliasing samples
    forward: str = "+z"             # the asset's forward axis (where its face looks), in the file's coordinates
    up: str = "+y"                  # the asset's up axis

    def __post_init__(self) -> None:
        for name, low in (("views", 1), ("resolution", 8), ("portrait_resolution", 8), ("samples", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name.replace('_', ' ')} must be an integer >= {low} (got {value!r})")
        if self.resolution > 4096 or self.portrait_resolution > 4096:
            raise ConfigError("resolutions above 4096 pixels are not supported")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)} (got {self.engine!r})")
        try:
            blender_script.orientation(self.forward, self.up)
        except ValueError as err:
            raise ConfigError(f"{err}; e.g. --forward +z --up +y for glTF-style assets") from None


@dataclass(frozen=True)
class MeshSubject:
    """One mesh and the subject folder it becomes."""

    index: int
    source: Path
    relative: str                   # source relative to the meshes folder, POSIX
    id: str
    folder: Path
    caption: str | None


@dataclass
class MeshRenderReport:
    out: Path
    rendered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)          # already complete
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, why)
    seconds: float = 0.0


# --- Blender and meshes -------------------------------------------------------------------------

def find_blender(blender: str | Path | None = None) -> Path:
    """The Blender executable: `blender` (a path or a command name), else `blender` on PATH."""
    if blender is not None:
        text = str(blender)
        found = shutil.which(text) if os.sep not in text else (text if os.access(text, os.X_OK) else None)
        if found is None or not Path(found).is_file():
            raise RodinError(f"Blender not found at {text}: give the path of the blender executable, or {INSTALL}")
        return Path(found)
    found = shutil.which("blender")
    if found is None:
        raise RodinError(f"Blender is not installed (no `blender` on PATH): {INSTALL_HINT}")
    return Path(found)


def find_meshes(folder: Path | str) -> list[Path]:
    """Mesh files under `folder` (recursively, hidden files and folders left out), in order."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; give the folder that holds the meshes")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in MESH_SUFFIXES:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def subject_ids(meshes: list[Path], root: Path | str) -> list[str]:
    """A folder name per mesh from its path under `root` ("chars/alice.glb" -> "chars-alice"); the
    format is appended where two files would share one ("-obj", "-glb")."""
    root = Path(root)
    base = []
    for path in meshes:
        parts = path.relative_to(root).with_suffix("").parts
        base.append(re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("._") or "mesh")
    ids = [b if base.count(b) == 1 else f"{b}-{p.suffix[1:].lower()}" for b, p in zip(base, meshes)]
    seen: dict[str, int] = {}
    for k, sid in enumerate(ids):
        if ids.count(sid) > 1:
            seen[sid] = seen.get(sid, 0) + 1
            ids[k] = f"{sid}-{seen[sid]}"
    return ids


def read_caption(mesh: Path) -> str | None:
    """The caption from a sidecar `<name>.txt` beside the mesh, if there is one."""
    sidecar = mesh.with_suffix(".txt")
    try:
        text = sidecar.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    text = " ".join(text.split())
    return text or None


# --- cameras and the job ------------------------------------------------------------------------

def azimuth_offset(sid: str) -> float:
    """Degrees; from the id, so that subjects are seen from different azimuths, stably."""
    return int.from_bytes(hashlib.sha256(f"rodin-meshes/{sid}".encode()).digest()[:4], "big") % 36000 / 100.0


def mesh_cameras(sid: str, views: int) -> np.ndarray:
    """(views, 4, 4) camera-to-world: the generator's Fibonacci band at the default radius."""
    return subject_cameras(views, azimuth_offset(sid)).double().numpy()


def portrait_camera() -> np.ndarray:
    """The frontal camera (azimuth 0 on +z, level), framing the whole normalised asset."""
    return orbit_cameras([0.0], [0.0], radius=DEFAULT_RADIUS)[0].double().numpy()


def _rows(matrix: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 8) for v in row] for row in np.asarray(matrix)]


def _rows_list(matrices: np.ndarray) -> list[list[list[float]]]:
    return [_rows(m) for m in matrices]


def build_job(subjects: list[MeshSubject], options: MeshRenderOptions, *, threads: int = 0) -> dict[str, Any]:
    """The job file that blender_script.py reads: all geometry of the world decided here."""
    lights = [{"direction": list(direction), "energy": math.pi * k, "angle": SUN_ANGLE}
              for direction, k in STUDIO_LIGHTS]
    return {
        "engine": options.engine, "samples": options.samples, "threads": int(threads),
        "resolution": options.resolution, "portrait_resolution": options.portrait_resolution,
        "fov_x": DEFAULT_FOV_X, "portrait_fov_x": PORTRAIT_FOV_X,
        "forward": options.forward, "up": options.up, "extent": EXTENT,
        "ambient": AMBIENT, "lights": lights,
        "meshes": [{
            "index": s.index, "source": str(s.source.resolve()),
            "images": str((s.folder / "images").resolve()), "portrait": str((s.folder / "portrait.png").resolve()),
            "cameras": _rows_list(mesh_cameras(s.id, options.views)), "portrait_camera": _rows(portrait_camera()),
        } for s in subjects],
    }



def marker_text(subject: MeshSubject, options: MeshRenderOptions) -> str:
    try:
        size = subject.source.stat().st_size
    except OSError:
        size = -1
    return json.dumps({"generator": GENERATOR, "source": subject.relative, "size": size,
                       "views": options.views, "resolution": options.resolution,
                       "portrait_resolution": options.portrait_resolution, "engine": options.engine,
                       "samples": options.samples, "forward": options.forward, "up": options.up,
                       "extent": EXTENT}, sort_keys=True)


# --- after Blender: clean the images, write the JSON files, the marker last -----------------------

def _clean_png(path: Path) -> float:
    """RGB = 0 where alpha = 0 (as our own renders); returns the mean alpha."""
    try:
        with Image.open(path) as image:
            rgba = np.array(image.convert("RGBA"))
    except (OSError, ValueError) as err:
        raise DataError(f"Blender wrote no readable image at {path} ({err})") from None
    rgba[rgba[..., 3] == 0, :3] = 0
    write_atomic(path, png_bytes(rgba))
    return float(rgba[..., 3].mean()) / 255.0


def finish_subject(subject: MeshSubject, result: dict[str, Any], options: MeshRenderOptions) -> dict[str, Any]:
    """Write a rendered subject's JSON files and marker; returns its index entry."""
    folder = subject.folder
    names = [f"images/r_{k:03d}.png" for k in range(options.views)]
    coverage = [_clean_png(folder / name) for name in names]
    _clean_png(folder / "portrait.png")
    if max(coverage) <= 0.0:
        raise DataError("every view is empty (nothing visible was rendered)")
    cameras = mesh_cameras(subject.id, options.views)
    world_from_asset = np.array(result["world_from_asset"], dtype=np.float64)
    attributes: dict[str, Any] = {
        "name": subject.source.stem,
        "source": subject.relative,
        "source_path": str(subject.source.resolve()),
        "format": subject.source.suffix.lower().lstrip("."),
    }
    if subject.caption is not None:
        attributes["caption"] = subject.caption
    attributes["normalisation"] = {
        "world_from_asset": _rows(world_from_asset),
        "asset_from_world": _rows(np.linalg.inv(world_from_asset)),
        "scale": round(float(np.linalg.norm(world_from_asset[:3, 0])), 10),
        "forward": options.forward, "up": options.up, "extent": EXTENT,
        "asset_coordinates": "the numbers in the file (FBX: after its own axis settings, y-up)",
    }
    attributes["asset"] = {key: result.get(key) for key in ("vertices", "faces", "objects", "materials",
                                                            "textures", "vertex_colours")}
    attributes["renderer"] = {"blender": result.get("blender"), "engine": options.engine,
                              "samples": options.samples}
    write_json(folder / "attributes.json", attributes)
    transforms = {
        "camera_angle_x": DEFAULT_FOV_X,
        "rodin": {"up": "y", "bound": 1.0, "generator": GENERATOR, "radius": DEFAULT_RADIUS},
        "frames": [{"file_path": name, "transform_matrix": _rows(c)} for name, c in zip(names, cameras)],
        "portrait": {"file_path": "portrait.png", "camera_angle_x": PORTRAIT_FOV_X,
                     "transform_matrix": _rows(portrait_camera())},
    }
    write_json(folder / "transforms.json", transforms)
    write_atomic(folder / MARKER, marker_text(subject, options).encode())     # last: complete
    return index_entry(subject)


def index_entry(subject: MeshSubject) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": subject.id, "split": subject_split(subject.id), "source": subject.relative}
    if subject.caption is not None:
        entry["caption"] = subject.caption
    return entry


# --- running Blender ----------------------------------------------------------------------------

def blender_command(blender: Path, job: Path) -> list[str]:
    return [str(blender), "-b", "--factory-startup", "-noaudio", "--python-exit-code", "3",
            "-P", str(SCRIPT), "--", str(job)]


def _is_python_env_bin(entry: str) -> bool:
    parent = Path(entry).parent
    return (parent / "pyvenv.cfg").is_file() or (parent / "conda-meta").is_dir()


def _blender_env() -> dict[str, str]:
    """Our environment without what would point Blender's Python at our virtual environment: a
    system Blender (Debian's) finds its Python by looking for `python3.X` on PATH, and would load the
    venv's site-packages (and, for another Python version, a stdlib it cannot run)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not _is_python_env_bin(p)]
    env["PATH"] = os.pathsep.join(path)
    return env


def run_batch(blender: Path, subjects: list[MeshSubject], options: MeshRenderOptions, *, threads: int,
              on_result: Callable[[MeshSubject, dict[str, Any]], None]) -> None:
    """Render `subjects` in Blender processes, calling on_result(subject, event) once per subject. A
    mesh that kills Blender is reported as failed and a new process takes the rest."""
    pending = list(subjects)
    by_index = {s.index: s for s in subjects}
    with tempfile.TemporaryDirectory(prefix="rodin-blender-") as tmp:
        job_path = Path(tmp) / "job.json"
        while pending:
            job_path.write_text(json.dumps(build_job(pending, options, threads=threads)))
            started: int | None = None
            finished: set[int] = set()
            tail: deque[str] = deque(maxlen=8)
            try:
                proc = subprocess.Popen(blender_command(blender, job_path), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                        errors="replace", env=_blender_env())
            except OSError as err:
                raise RodinError(f"cannot run Blender at {blender} ({err.strerror or err}); {INSTALL_HINT}") from None
            with proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    at = line.find(blender_script.PREFIX)
                    if at < 0:
                        if line.strip():
                            tail.append(line.strip())
                        continue
                    try:
                        event = json.loads(line[at + len(blender_script.PREFIX):])
                    except ValueError:
                        continue
                    index = event.get("index")
                    if index not in by_index or index in finished:
                        continue
                    if event.get("event") == "start":
                        started = index
                    elif event.get("event") == "done":
                        finished.add(index)
                        started = None
                        on_result(by_index[index], event)
                code = proc.wait()
            remaining = [s for s in pending if s.index not in finished]
            if not remaining:
                return
            last = tail[-1] if tail else "no output"
            if started is None:      # died between meshes: go on with the rest if it got anywhere
                if not finished:
                    raise RodinError(f"Blender ({blender}) did not run the render script (exit code {code}: "
                                     f"{last[:200]}); check that it is Blender 3.0 or newer, or {INSTALL_HINT}")
            else:
                culprit = by_index[started]
                on_result(culprit, {"ok": False, "error": f"Blender crashed on it (exit code {code}): {last[:200]}"})
                remaining = [s for s in remaining if s.index != started]
            pending = remaining


# --- the whole run ------------------------------------------------------------------------------

def plan_subjects(meshes_dir: Path | str, out: Path | str) -> list[MeshSubject]:
    root = Path(meshes_dir)
    meshes = find_meshes(root)
    if not meshes:
        raise DataError(f"{root}: no meshes found (looked for {', '.join(MESH_SUFFIXES)}, recursively)")
    out = Path(out)
    return [MeshSubject(index=k, source=path, relative=path.relative_to(root).as_posix(), id=sid,
                        folder=out / sid, caption=read_caption(path))
            for k, (path, sid) in enumerate(zip(meshes, subject_ids(meshes, root)))]


def render_meshes(meshes: Path | str, out: Path | str, *, options: MeshRenderOptions | None = None,
                  blender: str | Path | None = None, workers: int = 1, progress: bool = True,
                  on_failure: Callable[[str, str], None] | None = None) -> MeshRenderReport:
    """Render every mesh under `meshes` into `out/<id>/` and write `out/index.json`.

    Subjects complete with the same options are kept; others are (re)rendered, `workers` Blender
    processes at a time. Meshes that fail are reported through `on_failure(source, why)` and in the
    report, and left out of the index.
    """
    options = options or MeshRenderOptions()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1 (got {workers!r})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder; give a folder for the subjects")
    subjects = plan_subjects(meshes, out)
    start = time.perf_counter()
    report = MeshRenderReport(out=out)
    entries: dict[int, dict[str, Any]] = {}
    todo = []
    for s in subjects:
        if subject_complete(s.folder, marker_text(s, options)):
            report.skipped.append(s.id)
            entries[s.index] = index_entry(s)
        else:
            todo.append(s)
    if todo:
        exe = find_blender(blender)          # only when there is work: a finished run needs no Blender
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"cannot create {out}: {err.strerror or err}") from None
        for s in todo:
            if s.folder.exists():
                shutil.rmtree(s.folder)       # partial or made with other options: redo
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(subjects), initial=len(report.skipped), desc="render-meshes", unit="mesh",
                   file=sys.stderr, dynamic_ncols=True)
    lock = threading.Lock()

    def on_result(subject: MeshSubject, event: dict[str, Any]) -> None:
        why = None
        if event.get("ok"):
            try:
                entry = finish_subject(subject, event, options)
            except (DataError, OSError, KeyError, TypeError, ValueError) as err:
                why = str(err)
        else:
            why = str(event.get("error") or "unknown failure")
        with lock:
            if why is None:
                entries[subject.index] = entry
                report.rendered.append(subject.id)
            else:
                report.failed.append((subject.relative, why))
                if on_failure is not None:
                    if bar is None:
                        on_failure(subject.relative, why)
                    else:
                        with bar.external_write_mode(file=sys.stderr):     # a line of its own
                            on_failure(subject.relative, why)
            if bar is not None:
                bar.update(1)

    try:
        if todo:
            exe_threads = max(1, (os.cpu_count() or 1) // min(workers, len(todo)))
            size = min(BATCH, math.ceil(len(todo) / workers))
            batches = [todo[i:i + size] for i in range(0, len(todo), size)]
            with ThreadPoolExecutor(max_workers=min(workers, len(batches))) as pool:
                futures = [pool.submit(run_batch, exe, b, options, threads=exe_threads, on_result=on_result)
                           for b in batches]
                for future in futures:
                    future.result()
    finally:
        if bar is not None:
            bar.close()
    for s in todo:          # a failed subject leaves no half-written folder behind
        if s.index not in entries and s.folder.exists():
            shutil.rmtree(s.folder, ignore_errors=True)
    if entries:
        write_json(out / "index.json", {
            "format": FORMAT, "generator": GENERATOR, "meshes": str(Path(meshes).resolve()),
            "views": options.views, "resolution": options.resolution,
            "portrait_resolution": options.portrait_resolution, "engine": options.engine,
            "subjects": [entries[k] for k in sorted(entries)],
        })
    report.seconds = time.perf_counter() - start
    return report


__all__ = [
    "ENGINES", "FORMAT", "GENERATOR", "INSTALL", "INSTALL_HINT", "MESH_SUFFIXES", "SCRIPT", "MeshRenderOptions",
    "MeshRenderReport", "MeshSubject", "build_job", "find_blender", "find_meshes", "finish_subject",
    "mesh_cameras", "portrait_camera", "read_caption", "render_meshes", "run_batch", "subject_ids",
]
