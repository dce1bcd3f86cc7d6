"""Stage 1 end to end on tiny generated subjects: fit, held-out quality, store, resume, bad input."""

import json

import numpy as np
import pytest
import torch

from rodin.config import get_preset
from rodin.errors import FitError
from rodin.fit.run import fit_dataset
from rodin.fit.store import TriplaneStore
from rodin.fit.subject import heldout_indices, prepare_subject, visual_hull
from rodin.render.cameras import DEFAULT_FOV_X, orbit_cameras

# The tiny preset reaches 23.5 dB mean, SSIM 0.84 on these subjects (2026-11-25); a broken renderer, axis
# mix-up or optimiser lands far below it.
TINY_HELDOUT_PSNR = 20.0


@pytest.fixture(scope="module")
def tiny_run(tiny_fit):
    return tiny_fit  # shared with other test files (conftest.py): fitted once per session


def test_fit_reaches_psnr_on_tiny_subjects(tiny_run):
    _, metrics = tiny_run
    assert metrics["subjects_fitted"] == 8 and not metrics["subjects_failed"]
    assert metrics["heldout_subjects"] == 8
    assert metrics["heldout_psnr_mean"] > TINY_HELDOUT_PSNR
    assert metrics["heldout_ssim_mean"] > 0.75


def test_store_holds_every_subject_with_statistics(tiny_run):
    root, _ = tiny_run
    store = TriplaneStore.open(root / "run" / "triplanes")
    assert all(store.done) and len(store.ids) == 8
    planes = store.get(list(range(8)))
    assert planes.shape == (8, 3, 8, 32, 32) and torch.isfinite(planes).all()
    assert planes.std() > 1e-3                       # fitted, not left at zero
    stats = store.stats()
    assert stats.mean.shape == (8,) and (stats.std > 0).all()
    saved = json.loads((root / "run" / "metrics.json").read_text())
    assert saved["heldout_psnr_mean"] == pytest.approx(tiny_run[1]["heldout_psnr_mean"])


def test_fit_log_times_each_stage_from_its_start(tiny_run):
    """Per turn and per batch, the seconds since the stage began: a batch's row says how long it took."""
    import csv

    root, _ = tiny_run
    with open(root / "run" / "fit_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    for stage in ("joint", "frozen"):
        times = [float(r["time"]) for r in rows if r["stage"] == stage]
        assert times and times[0] > 0 and times == sorted(times), (stage, times)


def test_rerun_resumes_without_refitting(tiny_run):
    root, _ = tiny_run
    before = np.load(root / "run" / "triplanes" / "planes.npy").copy()
    metrics = fit_dataset(root / "data", root / "run", preset=get_preset("tiny"), show_progress=False,
                          log=lambda m: None)
    assert metrics["frozen_subjects"] == 0
    assert np.array_equal(before, np.load(root / "run" / "triplanes" / "planes.npy"))


def _views(n=8, res=16):
    c2w = orbit_cameras(torch.linspace(0, 315, n).tolist(), [10.0] * n)
    images = torch.zeros(n, res, res, 4)
    images[:, 4:12, 4:12] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    return images, c2w


def test_all_transparent_subject_is_refused_by_name():
    images, c2w = _views()
    images[..., 3] = 0
    with pytest.raises(FitError, match="ghost.*transparent"):
        prepare_subject("ghost", images, c2w, DEFAULT_FOV_X, heldout=2, hull_resolution=16)


def test_cameras_that_miss_the_box_are_refused_by_name():
    images, c2w = _views()
    c2w[:, :3, 3] += 50.0                      # moved far away, still looking along their old axes
    with pytest.raises(FitError, match="far"):
        prepare_subject("far", images, c2w, DEFAULT_FOV_X, heldout=2, hull_resolution=16)


def test_too_few_views_is_refused():
    images, c2w = _views(n=2)
    with pytest.raises(FitError, match="few.*2 views|2 views"):
        prepare_subject("few", images, c2w, DEFAULT_FOV_X, heldout=1, hull_resolution=16)


def test_visual_hull_of_a_centred_square_is_a_central_blob():
    images, c2w = _views(n=8, res=32)
    images = torch.zeros(8, 32, 32, 4)
    images[:, 12:20, 12:20, 3] = 1.0
    hull = visual_hull(images[..., 3], c2w, DEFAULT_FOV_X, 16, dilation=0)
    cells = hull.cells[0]
    assert cells[8, 8, 8] and not cells[0, 0, 0] and not cells[15, 8, 8]
    assert 0.005 < cells.float().mean() < 0.1


def test_heldout_views_are_spread_and_leave_enough_to_fit():
    assert heldout_indices(32, 4) == [4, 12, 20, 28]
    assert heldout_indices(4, 4) == [2]
    assert heldout_indices(16, 0) == []


def _as_blender_folder(source, target, *, scale=2.5, offset=(0.3, -0.2, 0.5)):
    """Rewrite one of our subjects as Blender would have rendered it: z-up, another scale and centre,
    no "rodin" block to say so."""
    import shutil

    shutil.copytree(source, target)
    meta = json.loads((target / "transforms.json").read_text())
    meta.pop("rodin", None)
    meta.pop("portrait", None)
    to_blender = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])        # y-up -> z-up
    for frame in meta["frames"]:
        m = torch.tensor(frame["transform_matrix"])
        out = torch.eye(4)
        out[:3, :3] = to_blender @ m[:3, :3]
        out[:3, 3] = to_blender @ m[:3, 3] * scale + torch.tensor(offset)
        frame["transform_matrix"] = out.tolist()
    (target / "transforms.json").write_text(json.dumps(meta))


def test_a_blender_style_folder_fits_without_editing_anything(tiny_run, tmp_path):
    root, metrics = tiny_run
    subject = sorted(p for p in (root / "data").iterdir() if p.is_dir())[-1]     # a frozen-stage subject
    _as_blender_folder(subject, tmp_path / "blender_subject")
    blender = fit_dataset(tmp_path / "blender_subject", tmp_path / "run", preset=get_preset("tiny"),
                          decoder_path=root / "run" / "decoder", show_progress=False, log=lambda m: None)
    ours = json.loads((root / "run" / "subject_metrics.json").read_text())[subject.name]
    assert blender["subjects_fitted"] == 1
    # Same subject, same decoder: the z-up, rescaled copy fits about as well as the original.
    assert blender["heldout_psnr_mean"] > ours["psnr"] - 2.0
    assert blender["heldout_psnr_mean"] > TINY_HELDOUT_PSNR - 2.0


def test_a_nan_loss_stops_that_subject_and_the_others_go_on(tiny_run, tmp_path, monkeypatch):
    import rodin.fit.run as run_module

    root, _ = tiny_run
    real_fit_frozen = run_module.fit_frozen
    doomed = "subject_00005"

    def fit_frozen_with_a_nan(subjects, *args, **kwargs):
        if any(s.name == doomed for s in subjects):
            raise FitError("loss became NaN or infinite")
        return real_fit_frozen(subjects, *args, **kwargs)

    monkeypatch.setattr(run_module, "fit_frozen", fit_frozen_with_a_nan)
    messages = []
    metrics = fit_dataset(root / "data", tmp_path / "run", preset=get_preset("tiny"), max_subjects=7,
                          decoder_path=root / "run" / "decoder", show_progress=False, log=messages.append)
    assert list(metrics["subjects_failed"]) == [doomed]
    assert metrics["subjects_fitted"] == 6
    assert any(doomed in m and "NaN" in m for m in messages)
    store = TriplaneStore.open(tmp_path / "run" / "triplanes")
    assert store.done == [name != doomed for name in store.ids]


def test_interrupted_joint_stage_resumes_to_the_same_decoder(tiny_run, tmp_path, monkeypatch):
    import dataclasses

    from safetensors.torch import load_file

    import rodin.fit.run as run_module

    root, _ = tiny_run
    preset = get_preset("tiny")
    preset = dataclasses.replace(preset, fit=dataclasses.replace(preset.fit, joint_rounds=3, joint_steps_per_turn=8,
                                                                 steps=4))
    kwargs = dict(preset=preset, max_subjects=5, show_progress=False, log=lambda m: None)
    fit_dataset(root / "data", tmp_path / "straight", **kwargs)

    real_save = run_module.JointCheckpoint.save
    calls = []

    def save_then_die(self, *args, **kw):
        real_save(self, *args, **kw)
        calls.append(1)
        if len(calls) == 2:                      # killed right after round 2 was saved
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module.JointCheckpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit_dataset(root / "data", tmp_path / "resumed", **kwargs)
    monkeypatch.setattr(run_module.JointCheckpoint, "save", real_save)
    messages = []
    fit_dataset(root / "data", tmp_path / "resumed", **{**kwargs, "log": messages.append})
    assert any("resuming the joint stage at round 3/3" in m for m in messages)
    straight = load_file(str(tmp_path / "straight" / "decoder" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "decoder" / "model.safetensors"))
    for name, tensor in straight.items():
        assert torch.allclose(tensor, resumed[name], atol=1e-5), name
    assert np.allclose(np.load(tmp_path / "straight" / "triplanes" / "planes.npy"),
                       np.load(tmp_path / "resumed" / "triplanes" / "planes.npy"), atol=1e-3)


def test_joint_step_split_over_processes_adds_up_to_the_one_process_step():
    """What the data-parallel joint stage rests on: each process's share of a step (its subjects, its loss
    weighted by their share of the step), with the decoder gradients summed, is the one-process step;
    each subject's plane gradients are the one-process ones where they are."""
    import dataclasses

    from rodin.fit.fitter import SubjectPlanes, fit_step
    from rodin.triplane.decoder import TriplaneDecoder
    from rodin.triplane.triplane import init_planes

    tiny = get_preset("tiny")
    images, c2w = _views(n=6)
    subjects = []
    for k in range(3):
        tinted = images.clone()
        tinted[..., k] = images[..., 3]                  # a different colour per subject
        subjects.append(prepare_subject(f"s{k}", tinted, c2w, DEFAULT_FOV_X, heldout=1, hull_resolution=16))
    torch.manual_seed(0)
    decoder = TriplaneDecoder(tiny.decoder)
    init = init_planes(3, tiny.triplane.channels, tiny.triplane.resolution, generator=torch.Generator().manual_seed(1))
    planes = [SubjectPlanes(p) for p in init]
    config = dataclasses.replace(tiny.fit, rescale_prob=1.0)     # the shared draw matters: every step rescales

    def step(members, step_subjects):
        decoder.zero_grad(set_to_none=True)
        for p in planes:
            p.zero_grad(set_to_none=True)
        stats = fit_step([subjects[k] for k in members], [planes[k] for k in members], decoder, [], config=config,
                         triplane=tiny.triplane, generator=torch.Generator().manual_seed(7),
                         subject_generators=[torch.Generator().manual_seed(100 + k) for k in members],
                         step_subjects=step_subjects, sum_processes=lambda t: t)
        return stats, [p.grad.clone() for p in decoder.parameters()], {k: planes[k].levels[0].grad.clone()
                                                                      for k in members}

    whole, whole_grads, whole_planes = step([0, 1, 2], 3)
    first, first_grads, first_planes = step([0, 2], 3)
    second, second_grads, second_planes = step([1], 3)
    assert whole.loss == pytest.approx(first.loss + second.loss, rel=1e-5)
    for g, a, b in zip(whole_grads, first_grads, second_grads):
        assert torch.allclose(g, a + b, rtol=1e-4, atol=1e-7)
    for k, g in {**first_planes, **second_planes}.items():
        assert torch.allclose(whole_planes[k], g, rtol=1e-4, atol=1e-9)
    # The control: shares not weighted by their size (each a mean of its own) do not add up.
    _, unweighted, _ = step([0, 2], None)
    assert max((g - a - b).abs().max().item() for g, a, b in zip(whole_grads, unweighted, second_grads)) > 1e-4


def test_cli_set_changes_fit_settings_and_a_resumed_run_records_the_earlier_ones(tiny_run, tmp_path, capsys):
    from rodin.cli.main import main

    root, _ = tiny_run
    out = tmp_path / "run"
    common = ["fit", str(root / "data"), "--out", str(out), "--preset", "tiny", "--decoder",
              str(root / "run" / "decoder"), "--steps", "3"]
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--subjects", "4"])       # a run that later resumes with other settings
    assert exit_info.value.code in (0, None)
    first = json.loads((out / "fit_config.json").read_text())
    assert first["fit"]["samples"] == get_preset("tiny").fit.samples and "fit_history" not in first
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--subjects", "4", "--set", "samples=12", "--set", "plane_lr=0.03"])
    assert exit_info.value.code in (0, None)
    second = json.loads((out / "fit_config.json").read_text())
    assert second["fit"]["samples"] == 12 and second["fit"]["plane_lr"] == 0.03
    assert second["fit_history"] == [{"fit": first["fit"], "subjects_done_before_change": 4}]
    assert all(TriplaneStore.open(out / "triplanes").done)
    capsys.readouterr()
    for setting, words in (("sample=12", "unknown key 'sample'"), ("samples=many", "samples"),
                           ("samples", "KEY=VALUE")):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, "--set", setting])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and words in err[0], err


def test_plane_eps_holds_back_texels_whose_gradient_is_weak(tiny_run, tmp_path):
    """Adam's epsilon for the planes: far above every gradient, the planes stay where they started;
    at the default they move."""
    import dataclasses

    root, _ = tiny_run
    tiny = get_preset("tiny")

    def fitted(name, steps, eps):
        preset = dataclasses.replace(tiny, fit=dataclasses.replace(tiny.fit, steps=steps, plane_eps=eps))
        fit_dataset(root / "data", tmp_path / name, preset=preset, max_subjects=2,
                    decoder_path=root / "run" / "decoder", show_progress=False, log=lambda m: None)
        return TriplaneStore.open(tmp_path / name / "triplanes").get([0, 1]).float()

    held = fitted("held", 8, 1e3) - fitted("held-start", 1, 1e3)
    moved = fitted("moved", 8, tiny.fit.plane_eps) - fitted("moved-start", 1, tiny.fit.plane_eps)
    assert held.abs().max() < 1e-3 * moved.abs().max()
    assert moved.abs().mean() > 0.5 * tiny.fit.plane_lr     # several steps of about lr each
