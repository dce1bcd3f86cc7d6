"""Multi-view consistency: the warp agrees with geometry, and inconsistent scenes score low."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rodin.eval.consistency import View, compare_views, ground_truth_views, project, turntable_consistency
from rodin.render.cameras import DEFAULT_FOV_X, camera_rays, orbit_cameras, turntable_cameras

RADIUS = 0.7


def _texture(points: torch.Tensor) -> torch.Tensor:
    """A colour that lives on the surface (a function of the 3D point only)."""
    x, y, z = points.unbind(-1)
    return torch.stack([0.5 + 0.4 * torch.sin(3 * x + y), 0.5 + 0.4 * torch.cos(2 * y - 2 * z),
                        0.5 + 0.4 * torch.sin(2 * z + 3 * x)], dim=-1)


def _sphere_view(c2w: torch.Tensor, resolution: int = 48, *, view_noise: float = 0.0, seed: int = 0) -> View:
    """A ray-traced textured sphere: exact depth, opacity 1 on the sphere; `view_noise` adds colour noise that
    differs per view (an inconsistent renderer)."""
    rays = camera_rays(c2w, DEFAULT_FOV_X, resolution)
    o, d = rays.origins, rays.directions
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - RADIUS ** 2)
    hit = disc > 0
    t = torch.where(hit, -b - torch.sqrt(disc.clamp_min(0)), torch.full_like(b, 1e3))
    rgb = torch.where(hit[..., None], _texture(o + t[..., None] * d), torch.ones(resolution, resolution, 3))
    if view_noise:
        noise = torch.rand(resolution, resolution, 3, generator=torch.Generator().manual_seed(seed)) - 0.5
        rgb = (rgb + view_noise * noise * hit[..., None]).clamp(0, 1)
    return View(rgb, t, hit.float(), c2w, DEFAULT_FOV_X)


def test_projection_inverts_the_camera_rays():
    c2w = orbit_cameras([30.0], [10.0])[0]
    rays = camera_rays(c2w, DEFAULT_FOV_X, 8, 6)
    points = rays.origins + 2.5 * rays.directions
    grid, distance = project(points, c2w, DEFAULT_FOV_X, 8, 6)
    u = (torch.arange(8) + 0.5) / 8 * 2 - 1
    v = (torch.arange(6) + 0.5) / 6 * 2 - 1
    assert torch.allclose(grid[..., 0], u.expand(6, 8), atol=1e-5)
    assert torch.allclose(grid[..., 1], v[:, None].expand(6, 8), atol=1e-5)
    assert torch.allclose(distance, torch.full((6, 8), 2.5), atol=1e-4)


def test_a_consistent_scene_scores_high_and_an_inconsistent_one_low():
    cameras = turntable_cameras(12)
    consistent = [_sphere_view(c) for c in cameras]
    figures = turntable_consistency(consistent)
    assert figures["psnr"] > 30.0 and figures["l1"] < 0.02
    assert figures["coverage"] > 0.6 and figures["pairs"] == 24
    noisy = [_sphere_view(c, view_noise=0.5, seed=k) for k, c in enumerate(cameras)]
    worse = turntable_consistency(noisy)
    assert worse["psnr"] < figures["psnr"] - 10.0


def test_a_wrong_depth_breaks_consistency():
    """The warp relies on depth: the same images with depth off by 15% no longer agree."""
    a, b = (_sphere_view(c) for c in turntable_cameras(12)[:2])
    good = compare_views(a, b)
    shifted = View(a.rgb, a.depth * 1.15, a.alpha, a.c2w, a.fov_x)
    bad = compare_views(shifted, b)
    assert good.psnr > 26.0
    assert bad.pixels < 0.2 * good.pixels or bad.psnr < good.psnr - 8.0


def test_ground_truth_turntable_is_consistent(tmp_path):
    from rodin.data.synth import synth_subject

    synth_subject(tmp_path, 0, dataset_seed=0, views=2, resolution=16, portrait_resolution=16)
    views = ground_truth_views(tmp_path / "subject_00000", frames=8, resolution=48)
    figures = turntable_consistency(views)
    assert figures["psnr"] > 20.0 and figures["coverage"] > 0.5
    shuffled = [views[k] for k in (0, 4, 1, 5, 2, 6, 3, 7)]      # images no longer at their cameras
    mixed = [View(v.rgb, v.depth, v.alpha, views[k].c2w, v.fov_x) for k, v in enumerate(shuffled)]
    assert turntable_consistency(mixed)["psnr"] < figures["psnr"] - 5.0


def test_eval_consistency_cli_on_a_tiny_model_and_an_avatar(tiny_semantic_model, tiny_fit_run, tmp_path, capsys):
    from rodin.cli.main import main
    from rodin.pipeline import RodinPipeline

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "consistency", str(tiny_semantic_model), "--avatars", "1", "--frames", "6",
              "--resolution", "24", "--steps", "2", "--data", str(tiny_fit_run / "data"), "--subjects", "1"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    assert figures["avatars"] == 1 and figures["pairs"] == 12
    assert figures["reference"]["subjects"] == 1 and figures["reference"]["psnr"] > 15.0
    saved = json.loads((tiny_semantic_model / "eval_consistency.json").read_text())
    assert saved["figures"]["frames"] == 6 and saved["command"].startswith("rodin eval consistency")
    assert figures["psnr"] is None or math.isfinite(figures["psnr"])

    avatar = RodinPipeline.from_pretrained(tiny_semantic_model)(seed=0, steps=2)
    path = avatar.save(tmp_path / "one.safetensors")
    with pytest.raises(SystemExit):
        main(["eval", "consistency", str(path), "--frames", "4", "--resolution", "16"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["avatars"] == 1 and figures["frames"] == 4
    assert (tmp_path / "one.consistency.json").is_file()


def test_eval_consistency_refuses_what_it_cannot_read(tmp_path, capsys):
    from rodin.cli.main import main

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "consistency", str(tmp_path / "notes.txt")])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
