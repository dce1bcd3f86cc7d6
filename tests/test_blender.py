"""Meshes through Blender: options, discovery, normalisation, cameras, the process protocol, and (when
Blender is installed) real renders of tiny meshes that load with our own loader."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from rodin.cli.main import main
from rodin.data import blender_script
from rodin.data.blender import (
    MeshRenderOptions,
    build_job,
    find_blender,
    find_meshes,
    mesh_cameras,
    plan_subjects,
    render_meshes,
    subject_ids,
)
from rodin.data.nerf import list_subjects, load_subject
from rodin.data.synth import MARKER, subject_cameras
from rodin.errors import ConfigError, DataError, RodinError
from rodin.render.cameras import DEFAULT_FOV_X, DEFAULT_RADIUS

TINY = MeshRenderOptions(views=4, resolution=32, portrait_resolution=32, samples=4)


def run_cli(*args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def toy_mesh() -> trimesh.Trimesh:
    """A blue ball with a red nose on its +z side (the face looks toward +z), off-centre and scaled."""
    head = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    head.visual.face_colors = [40, 80, 230, 255]
    nose = trimesh.creation.box(extents=(0.3, 0.3, 0.4))
    nose.apply_translation((0.0, 0.0, 0.55))
    nose.visual.face_colors = [230, 30, 30, 255]
    mesh = trimesh.util.concatenate([head, nose])
    mesh.apply_scale(7.0)
    mesh.apply_translation((3.0, -2.0, 10.0))
    return mesh


# --- options, discovery, Blender lookup ----------------------------------------------------------

@pytest.mark.parametrize("bad", [dict(views=0), dict(resolution=4), dict(portrait_resolution=True),
                                 dict(samples=0), dict(engine="povray"), dict(forward="+q"),
                                 dict(forward="+y"), dict(forward="-z", up="+z")])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        MeshRenderOptions(**bad)


def test_bad_workers_and_missing_folder_fail_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        render_meshes(tmp_path, tmp_path / "out", workers=0, progress=False)
    with pytest.raises(DataError, match="no such folder"):
        render_meshes(tmp_path / "nowhere", tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="no meshes found"):
        render_meshes(tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_blender_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RodinError) as info:
        find_blender()
    message = str(info.value)
    assert "\n" not in message and "apt-get install blender python3-numpy" in message and "--blender" in message
    with pytest.raises(RodinError, match="not found at"):
        find_blender(tmp_path / "blender")
    (tmp_path / "meshes").mkdir()
    toy_mesh().export(tmp_path / "meshes" / "toy.obj")
    code, _, err = run_cli("data", "render-meshes", "--meshes", str(tmp_path / "meshes"), "--out",
                           str(tmp_path / "out"), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "apt-get install blender" in err


def test_meshes_are_found_recursively_and_named_uniquely(tmp_path):
    for name in ("a.obj", "a.GLB", "b.gltf", "c.fbx", "chars/alice smith.ply", ".hidden.obj", ".cache/x.obj",
                 "notes.txt", "a.mtl", "scene.bin", "chars/tex.png"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = find_meshes(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.GLB", "a.obj", "b.gltf", "c.fbx", "chars/alice smith.ply"]
    assert subject_ids(found, tmp_path) == ["a-glb", "a-obj", "b", "c", "chars-alice_smith"]
    (tmp_path / "b.txt").write_text("  a knight\nin armour \n")
    captions = {s.id: s.caption for s in plan_subjects(tmp_path, tmp_path / "out")}
    assert captions["b"] == "a knight in armour" and captions["c"] is None


# --- normalisation maths -------------------------------------------------------------------------

def test_normalisation_centres_and_scales_into_the_box():
    mesh = toy_mesh()
    m = blender_script.normalisation(mesh.vertices)
    placed = mesh.copy()
    placed.apply_transform(m)
    lo, hi = placed.vertices.min(0), placed.vertices.max(0)
    assert np.allclose((lo + hi) / 2, 0.0, atol=1e-9), "the bounding box is centred"
    assert np.linalg.norm(placed.vertices, axis=1).max() == pytest.approx(1.0)
    assert (np.abs(placed.vertices) <= 1.0 + 1e-9).all()
    # Inside every default view: the bounding sphere of radius 1 fits the cone the camera sees.
    assert 1.0 < DEFAULT_RADIUS * math.sin(DEFAULT_FOV_X / 2)
    nose = placed.vertices[placed.vertices[:, 2] > 0.8]
    assert len(nose) and np.abs(nose[:, :2].mean(0)).max() < 0.05, "with the default axes the nose stays on +z"


@pytest.mark.parametrize("forward, up, nose_axis, top_axis", [
    ("+x", "+y", (1, 0, 0), (0, 1, 0)),      # an asset that looks along +x
    ("-y", "+z", (0, -1, 0), (0, 0, 1)),     # a z-up scan facing -y (Blender's own front)
])
def test_normalisation_turns_the_asset_to_face_plus_z(forward, up, nose_axis, top_axis):
    # Nose and head top placed along the asset's own forward and up axes.
    nose, top = np.array(nose_axis, float), np.array(top_axis, float)
    points = np.concatenate([np.random.default_rng(0).normal(size=(200, 3)) * 0.3, [2 * nose], [2 * top]])
    m = blender_script.normalisation(points, forward=forward, up=up)
    rotation = m[:3, :3] / np.linalg.norm(m[:3, 0])
    assert np.linalg.det(rotation) == pytest.approx(1.0), "a rotation, never a mirror"
    assert rotation @ nose == pytest.approx([0, 0, 1])
    assert rotation @ top == pytest.approx([0, 1, 0])


def test_normalisation_refuses_a_point():
    with pytest.raises(ValueError, match="no extent"):
        blender_script.normalisation(np.ones((5, 3)))


# --- cameras handed to Blender ---------------------------------------------------------------------

def test_job_carries_our_cameras(tmp_path):
    (tmp_path / "m").mkdir()
    toy_mesh().export(tmp_path / "m" / "toy.obj")
    subjects = plan_subjects(tmp_path / "m", tmp_path / "out")
    job = json.loads(json.dumps(build_job(subjects, TINY)))   # what the script reads
    entry = job["meshes"][0]
    cams = np.array(entry["cameras"])
    assert cams.shape == (4, 4, 4) and job["fov_x"] == DEFAULT_FOV_X and job["resolution"] == 32
    assert np.allclose(cams, mesh_cameras("toy", 4), atol=1e-7)
    # The generator's placement: the same band, and a per-subject azimuth that the id fixes.
    offset_cams = subject_cameras(4, float(np.degrees(np.arctan2(cams[0, 0, 3], cams[0, 2, 3]))))
    assert np.allclose(cams, offset_cams.numpy(), atol=1e-5)
    eye, back = cams[:, :3, 3], cams[:, :3, 2]
    assert np.allclose(np.linalg.norm(eye, axis=1), DEFAULT_RADIUS, atol=1e-5)
    assert np.allclose(back, eye / DEFAULT_RADIUS, atol=1e-5), "each camera looks at the origin down -z"
    assert np.allclose(cams[:, :3, :3].transpose(0, 2, 1) @ cams[:, :3, :3], np.eye(3), atol=1e-6)
    portrait = np.array(entry["portrait_camera"])
    assert np.allclose(portrait[:3, 3], [0, 0, DEFAULT_RADIUS], atol=1e-6), "the portrait sits on +z, level"
    assert np.allclose(portrait[:3, :3], np.eye(3), atol=1e-6)
    assert entry["images"].endswith("toy/images") and Path(entry["source"]).is_absolute()
    assert job["forward"] == "+z" and job["up"] == "+y" and len(job["lights"]) == 3


# --- the process protocol, with a stand-in for Blender -------------------------------------------

FAKE_BLENDER = r'''#!{python}
"""Stands in for Blender: renders a disc per view; crashes on meshes named crash*, fails bad*."""
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image
job = json.loads(Path(sys.argv[-1]).read_text())
log = Path(__file__).with_name("calls.log")
log.write_text(log.read_text() + "%d\n" % len(job["meshes"]) if log.exists() else "%d\n" % len(job["meshes"]))
for mesh in job["meshes"]:
    print("noise from the importer")
    print("@rodin " + json.dumps({{"event": "start", "index": mesh["index"]}}), flush=True)
    name = Path(mesh["source"]).stem
    if name.startswith("crash"):
        sys.exit(139)
    if name.startswith("bad"):
        print("@rodin " + json.dumps({{"event": "done", "index": mesh["index"], "ok": False,
                                      "error": "Blender could not import it"}}), flush=True)
        continue
    r = job["resolution"]
    yy, xx = np.mgrid[:r, :r]
    disc = (((xx - r / 2 + 0.5) ** 2 + (yy - r / 2 + 0.5) ** 2) < (r / 4) ** 2)
    rgba = np.zeros((r, r, 4), np.uint8); rgba[..., 1] = 200; rgba[..., 3] = disc * 255
    Path(mesh["images"]).mkdir(parents=True, exist_ok=True)
    for k in range(len(mesh["cameras"])):
        Image.fromarray(rgba).save(Path(mesh["images"]) / ("r_%03d.png" % k))
    p = job["portrait_resolution"]
    Image.fromarray(np.full((p, p, 4), 255, np.uint8)).save(mesh["portrait"])
    print("@rodin " + json.dumps({{"event": "done", "index": mesh["index"], "ok": True,
                                  "world_from_asset": np.eye(4).tolist(), "vertices": 8, "faces": 12,
                                  "blender": "fake"}}), flush=True)
'''


@pytest.fixture()
def fake_blender(tmp_path) -> Path:
    path = tmp_path / "bin" / "blender"
    path.parent.mkdir()
    path.write_text(FAKE_BLENDER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_crash_and_failure_are_reported_and_the_rest_go_on(tmp_path, fake_blender, capsys):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    for name in ("a.obj", "bad.obj", "crash.glb", "d.ply", "e.fbx"):
        (meshes / name).write_bytes(b"x")
    out = tmp_path / "out"
    code, stdout, err = run_cli("data", "render-meshes", "--meshes", str(meshes), "--out", str(out),
                                "--views", "3", "--resolution", "16", "--portrait-resolution", "16",
                                "--blender", str(fake_blender), capsys=capsys)
    assert code == 1, "some meshes failed: the run says so in its exit code"
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert any("crash.glb" in w and "crashed" in w and "139" in w for w in warnings)
    assert any("bad.obj" in w and "import" in w for w in warnings)
    assert "rendered 3" in stdout and "failed 2" in stdout
    calls = (fake_blender.parent / "calls.log").read_text().split()
    assert calls == ["5", "2"], "after the crash a new process takes the meshes not yet rendered"
    index = json.loads((out / "index.json").read_text())
    assert [s["id"] for s in index["subjects"]] == ["a", "d", "e"]
    assert not (out / "crash").exists() and not (out / "bad").exists()
    assert [p.name for p in list_subjects(out)] == ["a", "d", "e"]
    views = load_subject(out / "d")
    assert views.images.shape == (3, 16, 16, 4)
    rgb, alpha = views.images[..., :3], views.images[..., 3]
    assert (rgb[alpha == 0] == 0).all(), "RGB is zero where alpha is zero, as in our own renders"
    assert (out / "d" / MARKER).is_file()
    attributes = json.loads((out / "d" / "attributes.json").read_text())
    assert attributes["source"] == "d.ply" and attributes["name"] == "d" and "caption" not in attributes
    assert attributes["normalisation"]["world_from_asset"] == np.eye(4).tolist()


def test_blender_that_runs_nothing_is_one_clear_error(tmp_path, capsys):
    not_blender = tmp_path / "blender"
    not_blender.write_text("#!/bin/sh\necho 'not blender'\n")
    not_blender.chmod(0o755)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.obj").write_bytes(b"x")
    code, _, err = run_cli("data", "render-meshes", "--meshes", str(tmp_path / "m"), "--out", str(tmp_path / "o"),
                           "--blender", str(not_blender), capsys=capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and "did not run the render script" in last
    assert "not blender" in last


def test_environment_for_blender_leaves_our_venv_out(monkeypatch, tmp_path):
    from rodin.data.blender import _blender_env

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    monkeypatch.setenv("PATH", os.pathsep.join([str(venv / "bin"), "/usr/bin"]))
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = _blender_env()
    assert env["PATH"] == "/usr/bin" and "PYTHONPATH" not in env


# --- real Blender ------------------------------------------------------------------------------

def _blender_or_skip() -> Path:
    try:
        return find_blender()
    except RodinError:
        pytest.skip("Blender is not installed (apt-get install blender python3-numpy)")


def test_real_blender_renders_loadable_subjects(tmp_path):
    _blender_or_skip()
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    mesh = toy_mesh()
    mesh.export(meshes / "toy.glb")
    mesh.export(meshes / "toy_obj.obj")
    scan = trimesh.creation.icosphere(subdivisions=2, radius=2.0)
    scan.visual.vertex_colors = np.tile([20, 200, 40, 255], (len(scan.vertices), 1)).astype(np.uint8)
    scan.export(meshes / "scan.ply")
    (meshes / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00 this is not a mesh")
    (meshes / "toy.txt").write_text("a blue ball with a red nose\n")
    out = tmp_path / "out"
    failures = []
    report = render_meshes(meshes, out, options=TINY, progress=False,
                           on_failure=lambda source, why: failures.append((source, why)))
    assert sorted(report.rendered) == ["scan", "toy", "toy_obj"]
    assert [f[0] for f in failures] == ["broken.glb"] and report.failed == failures
    assert not (out / "broken").exists()

    for sid in ("toy", "toy_obj", "scan"):
        views = load_subject(out / sid)
        assert views.images.shape == (4, 32, 32, 4)
        assert torch.allclose(views.world_from_file, torch.eye(4)), "already in our world: y up, bound 1"
        alpha = views.images[..., 3]
        assert (alpha > 0.5).float().mean(dim=(1, 2)).min() > 0.05, f"{sid}: every view shows the asset"
        for a in alpha:                       # centred: the silhouette's box straddles the middle
            ys, xs = torch.nonzero(a > 0.5, as_tuple=True)
            assert abs((xs.min() + xs.max()) / 2 - 15.5) <= 3 and abs((ys.min() + ys.max()) / 2 - 15.5) <= 3
            assert xs.min() > 0 and xs.max() < 31 and ys.min() > 0 and ys.max() < 31, "nothing cut off"
        assert views.portrait is not None and views.portrait_c2w is not None

    # The face looks toward +z: the frontal portrait shows the red nose in the middle.
    for sid in ("toy", "toy_obj"):
        portrait = np.asarray(Image.open(out / sid / "portrait.png").convert("RGBA")).astype(float)
        centre = portrait[13:19, 13:19]
        assert (centre[..., 3] > 200).all() and (centre[..., 0] > centre[..., 2] + 40).all(), sid
    # Vertex colours (PLY) come through as the asset has them.
    scan_views = load_subject(out / "scan").images
    seen = scan_views[..., 3] > 0.9
    green = scan_views[..., :3][seen].mean(0)
    assert green[1] > green[0] + 0.2 and green[1] > green[2] + 0.2

    attributes = json.loads((out / "toy" / "attributes.json").read_text())
    assert attributes["caption"] == "a blue ball with a red nose" and attributes["source"] == "toy.glb"
    world_from_asset = np.array(attributes["normalisation"]["world_from_asset"])
    placed = trimesh.transform_points(mesh.vertices, world_from_asset)
    assert np.abs(placed).max() <= 1.0 + 1e-4 and np.linalg.norm(placed, axis=1).max() == pytest.approx(1, abs=1e-4)
    assert np.allclose(world_from_asset, blender_script.normalisation(mesh.vertices), atol=1e-5)
    index = json.loads((out / "index.json").read_text())
    assert [s["id"] for s in index["subjects"]] == ["scan", "toy", "toy_obj"]

    # Resumable: a second run keeps the complete subjects untouched (and retries only the broken mesh).
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "index.json"}
    again = render_meshes(meshes, out, options=TINY, progress=False)
    assert sorted(again.skipped) == ["scan", "toy", "toy_obj"] and again.rendered == []
    assert [f[0] for f in again.failed] == ["broken.glb"]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    # A finished dataset needs no Blender at all to be "resumed".
    shutil.move(meshes / "broken.glb", tmp_path / "broken.glb")
    assert render_meshes(meshes, out, options=TINY, progress=False, blender=tmp_path / "no-blender").rendered == []


# --- the loop closed: meshes -> Blender -> `rodin fit` -> held-out quality -----------------------

# The tiny preset fitted on the two meshes below, rendered at 16 views of 32^2 with Cycles at its default
# 32 samples, reached 27.8 dB held-out PSNR (bust 29.1, head 26.5; SSIM 0.83) on 2 AMD EPYC cores shared
# with another job (2026-11-25); painting every pixel white scores 13.6 and 7.5 dB. Fewer samples leave
# noise the fit cannot match (8 samples: 25.5 dB).
BLENDER_FIT_PSNR = 24.0
BLENDER_FIT_PSNR_MIN = 22.0


def bust_mesh() -> trimesh.Trimesh:
    """Blue shoulders (a capsule lying along x), a skin-coloured head and a red nose toward +z: face colours
    in a glTF, the material path through Blender."""
    shoulders = trimesh.creation.capsule(height=0.6, radius=0.45, count=[16, 16])
    shoulders.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [0, 0, 1]))
    shoulders.apply_translation((0.0, -0.55, 0.0))
    shoulders.visual.face_colors = [40, 90, 220, 255]
    head = trimesh.creation.icosphere(subdivisions=2, radius=0.38)
    head.apply_translation((0.0, 0.35, 0.0))
    head.visual.face_colors = [230, 180, 140, 255]
    nose = trimesh.creation.box(extents=(0.12, 0.12, 0.2))
    nose.apply_translation((0.0, 0.35, 0.4))
    nose.visual.face_colors = [220, 30, 30, 255]
    return trimesh.util.concatenate([shoulders, head, nose])


def painted_head() -> trimesh.Trimesh:
    """A sphere whose vertex colours vary along every axis (and jump at the equator): the PLY vertex-colour
    path, and a subject that looks different from every side."""
    head = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    v = head.vertices
    colours = np.full((len(v), 4), 255, np.uint8)
    colours[:, 0] = (127 + 127 * v[:, 0]).astype(np.uint8)
    colours[:, 1] = np.where(v[:, 1] > 0, 220, 40)
    colours[:, 2] = (127 - 127 * v[:, 2]).astype(np.uint8)
    head.visual.vertex_colors = colours
    return head


def test_meshes_rendered_by_blender_fit_to_a_psnr_bar(tmp_path):
    from rodin.config import get_preset
    from rodin.fit.run import fit_dataset

    _blender_or_skip()
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    bust_mesh().export(meshes / "bust.glb")
    painted_head().export(meshes / "head.ply")
    options = MeshRenderOptions(views=16, resolution=32, portrait_resolution=32)
    report = render_meshes(meshes, tmp_path / "data", options=options, progress=False)
    assert sorted(report.rendered) == ["bust", "head"] and not report.failed

    metrics = fit_dataset(tmp_path / "data", tmp_path / "run", preset=get_preset("tiny"), show_progress=False,
                          log=lambda m: None)
    assert metrics["subjects_fitted"] == 2 and not metrics["subjects_failed"]
    assert metrics["heldout_subjects"] == 2
    assert metrics["heldout_psnr_mean"] > BLENDER_FIT_PSNR
    assert metrics["heldout_psnr_min"] > BLENDER_FIT_PSNR_MIN
