"""The attribute judge: it learns from generated views, saves and loads strictly, names valid classes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from rodin.data.synth import synth_dataset
from rodin.errors import DataError
from rodin.modeling import save_component
from rodin.render.cameras import orbit_cameras
from rodin.semantic.judge import (
    JUDGED,
    KIND,
    AttributeJudge,
    JudgeConfig,
    camera_azimuths,
    judge_accuracy,
    load_images,
    load_judge,
    majority_accuracy,
    train_judge,
)

TINY = JudgeConfig(image_size=32, width=16, embedding=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small convolutions run faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge")
    data = synth_dataset(root / "data", subjects=6, views=8, resolution=32, seed=0, portrait_resolution=32,
                         progress=False)
    metrics = train_judge(data, root / "judge", steps=60, batch=16, config=TINY, log=lambda _: None)
    return data, root / "judge", metrics


def test_front_views_are_read_from_the_camera_position():
    az = torch.tensor([0.0, 45.0, 90.0, 170.0, -60.0])
    got = camera_azimuths(orbit_cameras(az, torch.full((5,), 20.0)))
    assert torch.allclose(got, az, atol=1e-3)


def test_training_learns_the_training_subjects(trained):
    data, folder, metrics = trained
    loss = metrics["fixed_batch_loss"]
    assert loss["after"] < 0.5 * loss["before"]
    assert (folder / "judge_metrics.json").is_file()
    images = load_images(data, splits=("train",), size=TINY.image_size)
    assert len(images) > 6 and images.portrait.sum() == len(set(images.subjects))   # views and one portrait each
    labels = images.label_dicts()
    accuracy = judge_accuracy(load_judge(folder), images.pixels, labels)
    majority = majority_accuracy(labels, labels)
    assert accuracy["clothing_colour"] > majority["clothing_colour"] + 0.4
    assert sum(accuracy.values()) / len(accuracy) > sum(majority.values()) / len(majority) + 0.2


def test_training_is_deterministic(trained, tmp_path):
    data = trained[0]
    for name in ("a", "b"):
        train_judge(data, tmp_path / name, steps=3, batch=8, seed=1, config=TINY, log=lambda _: None)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_save_load_features_predict(tmp_path):
    torch.manual_seed(0)
    judge = AttributeJudge(JudgeConfig(image_size=32, width=8))
    save_component(judge, tmp_path / "j", kind=KIND)
    loaded = load_judge(tmp_path / "j")
    pixels = torch.rand(3, 3, 32, 32)
    a, b = judge(pixels), loaded(pixels)
    assert all(torch.equal(a[name], b[name]) for name in JUDGED)
    assert loaded.features(pixels).shape == (3, 256)
    assert loaded.features(torch.rand(2, 3, 48, 48)).shape == (2, 256)   # other sides are resized
    for guess in loaded.predict(pixels):
        assert set(guess) == set(JUDGED) and all(guess[name] in JUDGED[name] for name in JUDGED)


def test_misshaped_weights_fail_naming_the_tensor(tmp_path):
    save_component(AttributeJudge(TINY), tmp_path / "j", kind=KIND)
    weights = tmp_path / "j" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["heads.glasses.weight"] = torch.zeros(5, tensors["heads.glasses.weight"].shape[1])
    save_file(tensors, str(weights))
    with pytest.raises(DataError, match="heads.glasses.weight"):
        load_judge(tmp_path / "j")


def test_eval_judge_scores_ground_truth_and_fitted_planes(tiny_fit_run, tmp_path, capsys):
    """`rodin eval judge`: accuracy on held-out views, portraits and renders of their fitted tri-planes."""
    import json

    from rodin.cli.main import main
    from rodin.config import get_preset
    from rodin.semantic.judge import JudgeConfig, train_judge

    data = tiny_fit_run / "data"
    train_judge(data, tmp_path / "judge", steps=5, batch=8, config=JudgeConfig(image_size=32, width=8,
                multipliers=(1, 2)), log=lambda m: None)

    def run(*args):
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", "judge", *map(str, args)])
        return exit_info.value.code or 0, capsys.readouterr()

    code, captured = run(tmp_path / "judge", "--data", data, "--triplanes", tiny_fit_run / "run",   # preset: the run's
                         "--out", tmp_path / "figures.json")
    assert code == 0, captured.err
    figures = json.loads(captured.out.strip().splitlines()[-1])
    assert figures == json.loads((tmp_path / "figures.json").read_text())
    assert figures["heldout_subjects"] == 1 and figures["fitted_subjects"] == 1     # subject_00006 is val
    assert figures["fitted_resolution"] == get_preset("tiny").triplane.base_resolution
    for key in ("views_acc", "portraits_acc", "fitted_acc"):
        assert 0.0 <= figures[key] <= 1.0
    assert set(figures["fitted_per_attribute"]) <= set(figures["views_per_attribute"])

    code, captured = run(tmp_path / "nothing", "--data", data)
    assert code == 2 and captured.err.startswith("error: ") and captured.err.count("\n") == 1
