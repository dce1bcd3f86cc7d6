"""Geometry metrics: Chamfer distance and F-score behave as their definitions say, and `rodin eval fit`
scores a run's mesh against the subject's ground truth, read in the subject's own frame."""

import json

import numpy as np
import pytest
import trimesh
from PIL import Image
from test_mesh import CENTRE, RADIUS, run_cli, write_sphere_run

from rodin.errors import DataError
from rodin.eval.geometry import DEFAULT_TAU, compare_meshes, load_reference_mesh, point_scores


@pytest.fixture(scope="module")
def ball():
    return trimesh.creation.icosphere(subdivisions=4, radius=0.5)


def test_identical_point_sets_score_zero_and_one():
    points = np.random.default_rng(0).uniform(-1, 1, size=(2000, 3))
    scores = point_scores(points, points)
    assert scores.chamfer == 0.0 and scores.fscore == 1.0 and scores.precision == scores.recall == 1.0


def test_mesh_against_itself_is_only_sampling_noise(ball):
    scores = compare_meshes(ball, ball)
    assert DEFAULT_TAU == pytest.approx(0.04)
    assert scores.chamfer < 0.006 and scores.fscore == 1.0


def test_shifted_copy_scores_as_the_geometry_predicts(ball):
    # A sphere of radius r shifted by d: a point at cos(angle) = u from the shift lies
    # |sqrt(r² + d² - 2 r d u) - r| from the other sphere, u uniform on [-1, 1]. For r = 0.5, d = 0.1
    # that is about 0.05 on average, and within tau = 0.04 for u in [-0.316, 0.484]: 40% of the points.
    u = np.linspace(-1, 1, 200_001)
    gap = np.abs(np.sqrt(0.25 + 0.01 - 0.1 * u) - 0.5)
    scores = compare_meshes(ball, ball.copy().apply_translation([0.1, 0.0, 0.0]))
    assert scores.chamfer == pytest.approx(gap.mean(), abs=0.003)
    assert scores.precision == pytest.approx((gap <= DEFAULT_TAU).mean(), abs=0.02)
    assert scores.fscore == pytest.approx(0.4, abs=0.02)
    chamfers = [compare_meshes(ball, ball.copy().apply_translation([d, 0, 0]), points=20_000).chamfer
                for d in (0.02, 0.05, 0.2)]
    assert chamfers[0] < chamfers[1] < scores.chamfer < chamfers[2]


def test_empty_mesh_is_refused(ball):
    with pytest.raises(DataError, match="no surface"):
        compare_meshes(trimesh.Trimesh(), ball)


def test_reference_mesh_is_mapped_into_the_world(tmp_path, ball):
    path = tmp_path / "mesh.ply"
    ball.copy().apply_scale(2.0).export(path)
    matrix = np.diag([0.5, 0.5, 0.5, 1.0])
    mesh = load_reference_mesh(path, matrix)
    assert np.linalg.norm(mesh.vertices, axis=1).max() == pytest.approx(0.5, abs=1e-5)


def _blender_subject(folder):
    """A subject folder in Blender's frame (z up) at twice our scale, its mesh the sphere of test_mesh."""
    folder.mkdir(parents=True)
    Image.new("RGBA", (4, 4), (255, 0, 0, 255)).save(folder / "r_0.png")
    camera = [[1, 0, 0, 0], [0, 0, -1, -6], [0, 1, 0, 0], [0, 0, 0, 1]]      # on -y, looking along +y
    (folder / "transforms.json").write_text(json.dumps({
        "camera_angle_x": 0.7, "rodin": {"up": "z", "bound": 2.0},
        "frames": [{"file_path": "r_0.png", "transform_matrix": camera}]}))
    world = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS).apply_translation(CENTRE)
    x, y, z = world.vertices.T
    file_mesh = trimesh.Trimesh(2.0 * np.stack([x, -z, y], axis=1), world.faces, process=False)  # y up -> z up
    file_mesh.export(folder / "mesh.ply")


def test_eval_fit_scores_a_run_against_ground_truth(tmp_path, capsys):
    run = write_sphere_run(tmp_path / "run")
    _blender_subject(tmp_path / "data" / "ball")
    (run / "fit_config.json").write_text(json.dumps({"data": str(tmp_path / "data"), "preset": "tiny"}))
    (run / "subject_metrics.json").write_text(json.dumps({"ball": {"psnr": 30.5, "psnr_min": 29.0, "ssim": 0.95}}))
    code, out, err = run_cli("eval", "fit", run, "--resolution", "48", "--points", "20000", capsys=capsys)
    assert code in (0, None), err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["subjects"] == 1 and summary["geometry_subjects"] == 1
    assert summary["psnr_mean"] == 30.5 and summary["ssim_mean"] == 0.95
    assert summary["chamfer_mean"] < 0.01 and summary["fscore_mean"] > 0.99
    saved = json.loads((run / "eval_fit.json").read_text())
    assert saved["per_subject"]["ball"]["chamfer"] == pytest.approx(summary["chamfer_mean"])
    assert "ball" in out                                          # the table


def test_eval_fit_without_data_and_with_a_wrong_data_folder(tmp_path, capsys):
    run = write_sphere_run(tmp_path / "run")
    code, out, err = run_cli("eval", "fit", run, "--resolution", "32", capsys=capsys)
    assert code in (0, None), err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["geometry_subjects"] == 0 and summary["chamfer_mean"] is None and "--data" in err
    code, _, err = run_cli("eval", "fit", run, "--data", tmp_path / "nowhere", capsys=capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "nowhere" in err
