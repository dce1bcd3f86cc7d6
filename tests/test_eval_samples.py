"""`rodin eval samples`: FID, KID and attribute distances, and the command on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rodin.errors import ConfigError, DataError
from rodin.eval.distances import frechet_distance, kernel_distance, total_variation
from rodin.eval.features import FeatureExtractor, load_extractor
from rodin.eval.samples import SubjectImages, compare_sets, real_subject, split_halves, stray_opacity


def test_fid_of_a_set_against_itself_is_zero_and_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Gaussians with known moments: |mu|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), here diagonal covariances.
    b = rng.normal(size=(200_000, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, -1.0])
    c = rng.normal(size=(200_000, 3))
    expected = 2.0 + (1 + 4 + 0.25) + 3 - 2 * (1 + 2 + 0.5)
    assert frechet_distance(b, c) == pytest.approx(expected, abs=0.05)


def test_fid_agrees_with_scipy_sqrtm_and_survives_rank_deficient_covariances():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 5)), rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)
    few = rng.normal(size=(10, 64))                           # fewer samples than features
    value = frechet_distance(few, few + 0.5)
    assert np.isfinite(value) and value == pytest.approx(64 * 0.25, rel=1e-6)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same = kernel_distance(a, b, subset=100, subsets=50)
    shifted = kernel_distance(a, b + 0.5, subset=100, subsets=50)
    assert abs(same.mean) < 3 * same.std / np.sqrt(50) + 0.01
    assert shifted.mean > 10 * abs(same.mean) and shifted.mean > 0.05
    assert kernel_distance(a[:20], b, subset=100).subset == 20


def test_total_variation_and_bad_inputs():
    assert total_variation(["a", "a", "b"], ["a", "a", "b"]) == 0.0
    assert total_variation(["a"], ["b"]) == 1.0
    assert total_variation(["a", "b"], ["a", "a"]) == pytest.approx(0.5)
    with pytest.raises(DataError):
        total_variation([], ["a"])
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))
    with pytest.raises(DataError, match="differ"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ConfigError, match="Inception"):
        load_extractor("inception")
    with pytest.raises(ConfigError, match="--clip"):
        load_extractor("clip")


def test_real_subject_images_and_halves(tiny_fit_run):
    folder = sorted((tiny_fit_run / "data").glob("subject_*"))[0]
    subject = real_subject(folder, views=2, resolution=24)
    assert subject.pixels.shape == (3, 3, 24, 24) and len(subject.cameras) == 3
    assert subject.cameras[0].fov_x < subject.cameras[1].fov_x          # the portrait's narrower lens first
    assert 0.0 <= float(subject.pixels.min()) and float(subject.pixels.max()) <= 1.0
    assert subject.opacity is not None and subject.opacity.shape == (3, 24, 24)   # the PNGs' alpha
    on_white = subject.pixels.min(1).values < 0.99
    assert bool((subject.opacity[on_white] > 0).all())                      # colour only where there is alpha
    assert max(stray_opacity(view) for view in subject.opacity) < 0.05      # a real subject has no floaters
    a, b = split_halves(list(range(9)), seed=0)
    assert len(a) == 4 and len(b) == 5 and not set(a) & set(b) and split_halves(list(range(9)), seed=0) == (a, b)


def test_stray_opacity_sees_fog_beside_the_body_and_nothing_in_a_clean_silhouette():
    yy, xx = np.mgrid[:32, :32]
    body = ((yy - 16) ** 2 + (xx - 12) ** 2 < 64).astype(float)
    assert stray_opacity(body) == 0.0
    assert stray_opacity(body * 0.9 + 0.05 * (((yy - 16) ** 2 + (xx - 12) ** 2) < 81)) == 0.0   # a soft edge
    fog = body.copy()
    fog[2:6, 24:31] = 0.3                                  # a streak away from the body
    share = 0.3 * 28 / fog.sum()
    assert stray_opacity(fog) == pytest.approx(share)
    assert stray_opacity(np.zeros((8, 8))) == 0.0 and stray_opacity(np.full((8, 8), 0.2)) == 1.0
    two = body.copy()
    two[2:8, 26:30] = 1.0                                  # a smaller solid part: counted as stray
    assert 0.0 < stray_opacity(two) < 0.2


def test_compare_sets_floor_is_zero_for_identical_sets_and_grows_with_a_change():
    mean_colour = FeatureExtractor(name="test", encode=lambda x: torch.cat([x.mean((2, 3)), x.std((2, 3))], 1))
    g = torch.Generator().manual_seed(0)
    ones = [SubjectImages(str(k), [], torch.rand(2, 3, 8, 8, generator=g)) for k in range(30)]
    same = compare_sets(ones, ones, extractor=mean_colour, judge=None, kid_subset=20, kid_subsets=10, seed=0)
    assert same["fid"] == pytest.approx(0.0, abs=1e-8)
    darker = [SubjectImages(s.id, [], s.pixels * 0.5) for s in ones]
    moved = compare_sets(ones, darker, extractor=mean_colour, judge=None, kid_subset=20, kid_subsets=10, seed=0)
    assert moved["fid"] > 0.1 and moved["kid"] > same["kid"]


def test_eval_samples_cli_on_a_tiny_model(tiny_semantic_model, tiny_fit_run, tmp_path, capsys):
    from rodin.cli.main import main
    from rodin.semantic.judge import train_judge

    data = tiny_fit_run / "data"
    index = json.loads((data / "index.json").read_text())
    for k, entry in enumerate(index["subjects"]):             # the tiny set has too few held-out subjects
        entry["split"] = "train" if k < 2 else "val"
    held_data = tmp_path / "data"
    import shutil

    shutil.copytree(data, held_data)
    (held_data / "index.json").write_text(json.dumps(index))
    judge = tmp_path / "judge"
    train_judge(held_data, judge, steps=2, batch=4, log=lambda m: None)
    sheet = tmp_path / "sheet.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "samples", str(tiny_semantic_model), "--data", str(held_data), "--samples", "3", "--steps", "2",
              "--resolution", "24", "--judge", str(judge), "--kid-subset", "4", "--sheet", str(sheet)])
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    figures = json.loads(captured.out.strip().splitlines()[-1])
    assert figures["samples"] == 3 and figures["real_subjects"] == 6 and figures["half_sizes"] == [3, 3]
    assert figures["images"] == [6, 6] and figures["images_per_avatar"] == 2
    assert figures["fid"] >= 0 and figures["fid_floor"] >= 0 and np.isfinite(figures["kid"])
    assert set(figures["attr_tvd"]) == set(figures["attr_tvd_floor"]) and "hair_style" in figures["attr_tvd"]
    assert all(0.0 <= v <= 1.0 for v in figures["attr_tvd"].values())
    assert 0.0 <= figures["stray_opacity"] <= 1.0 and 0.0 <= figures["stray_opacity_floor"] < 0.05
    saved = json.loads((tiny_semantic_model / "eval_samples.json").read_text())
    assert saved["figures"]["fid"] == figures["fid"] and saved["command"].startswith("rodin eval samples")
    assert saved["machine"]["cores"] >= 1 and sheet.is_file()
    assert "FID" in captured.out


def test_eval_samples_refuses_data_without_held_out_subjects(tiny_semantic_model, tmp_path, capsys):
    from rodin.cli.main import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "samples", str(tiny_semantic_model), "--data", str(tmp_path / "empty"), "--samples", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and "held-out" in err


def test_clip_features_from_a_local_checkpoint(tmp_path):
    pytest.importorskip("transformers")
    from test_clip_adapter import write_tiny_clip

    write_tiny_clip(tmp_path / "clip")
    extractor = load_extractor("clip", clip=tmp_path / "clip")
    pixels = torch.rand(5, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    features = extractor(pixels)
    assert features.shape == (5, 16) and torch.allclose(features.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert extractor.name == "clip:clip" and torch.equal(features, extractor(pixels))
    subjects = [SubjectImages(str(k), [], pixels[k:k + 1]) for k in range(5)]
    figures = compare_sets(subjects, subjects, extractor=extractor, judge=None, kid_subset=5, kid_subsets=3, seed=0)
    assert figures["fid"] == pytest.approx(0.0, abs=1e-6)
