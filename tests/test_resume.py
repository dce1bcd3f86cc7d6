"""Kill-and-resume: `rodin train base` and `rodin fit`, killed with SIGKILL at random (seeded) moments three
times and restarted, finish with the weights of an uninterrupted run and lose at most one checkpoint
interval of work each time.

The killed runs are the real `rodin` command in a subprocess, on the tiny preset shrunk further (a few
steps, a checkpoint every step or two); the uninterrupted runs go through the same command in-process.
Most of the file's time is the subprocesses importing torch and diffusers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

KILLS = 3
TRAIN_STEPS = 14
CHECKPOINT_EVERY = 2          # train base: steps between checkpoints
JOINT_ROUNDS = 5
JOINT_STEPS_PER_ROUND = 9     # 3 subjects fitted one at a time, 3 steps each: one checkpoint per round
DRIVER = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_resume import shrink_tiny_preset
shrink_tiny_preset()
from rodin.cli.main import main
main(sys.argv[1:])
"""


def micro_preset():
    """The tiny preset with fewer, cheaper steps and frequent checkpoints."""
    from rodin.config import PRESETS

    tiny = PRESETS["tiny"]
    return replace(
        tiny,
        render=replace(tiny.render, samples=12, occupancy_resolution=16),
        fit=replace(tiny.fit, joint_subjects=3, joint_rounds=JOINT_ROUNDS, joint_steps_per_turn=3, steps=5,
                    rays_per_step=256, patch=4, samples=12, hull_resolution=16, heldout_views=2, batch_subjects=1),
        train_base=replace(tiny.train_base, steps=TRAIN_STEPS, batch=2, warmup=2, checkpoint_every=CHECKPOINT_EVERY,
                           sample_every=0, log_every=1),
    )


def shrink_tiny_preset() -> None:
    """Called by the driver in the subprocess: `--preset tiny` means the micro preset there."""
    from rodin import config

    config.PRESETS["tiny"] = micro_preset()


def run_in_process(args: list[str]) -> None:
    from rodin import config
    from rodin.cli.main import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(config.PRESETS, "tiny", micro_preset())
        with pytest.raises(SystemExit) as exit_info:
            main(args)
    assert exit_info.value.code in (0, None)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A 5-subject dataset of 16² views, the driver, and one uninterrupted fit run of it."""
    from rodin.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("resume")
    synth_dataset(root / "data", subjects=5, views=8, resolution=16, seed=0, portrait_resolution=16, progress=False)
    (root / "driver.py").write_text(DRIVER)
    run_in_process(["fit", str(root / "data"), "--out", str(root / "fit_straight"), "--preset", "tiny"])
    return root


def kill_and_resume(root: Path, args: list[str], *, progress: Callable[[], int], lost: Callable[[], int],
                    seed: int) -> list[int]:
    """Start `rodin ARGS`; once it has made progress since it started, wait a random moment and SIGKILL it.
    KILLS times; the last start runs to the end. Returns the work lost at each kill (as `lost` measures it
    between the kill and the next start)."""
    rng = random.Random(seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    losses: list[int] = []
    while True:
        proc = subprocess.Popen([sys.executable, str(root / "driver.py"), *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if len(losses) < KILLS:
            before, deadline = progress(), time.time() + 300
            while proc.poll() is None and progress() <= before and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                losses.append(lost())
                continue
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        return losses


def log_rows(path: Path) -> list[list[str]]:
    """Rows of a CSV log; a line cut short by the kill has fewer fields and is left out."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    width = len(lines[0].split(",")) if lines else 0
    return [line.split(",") for line in lines[1:] if len(line.split(",")) == width]


def test_train_base_killed_three_times_matches_an_uninterrupted_run(micro):
    root = micro
    args = ["train", "base", "--triplanes", str(root / "fit_straight"), "--preset", "tiny", "--seed", "3"]
    run_in_process([*args, "--out", str(root / "straight")])
    out = root / "killed"

    def logged_step() -> int:
        return max((int(row[0]) for row in log_rows(out / "train_log.csv")), default=0)

    def saved_step() -> int:
        for name in ("checkpoint", ".checkpoint.old"):
            try:
                return int(json.loads((out / name / "state.json").read_text())["step"])
            except (OSError, ValueError, KeyError):
                pass
        return TRAIN_STEPS if (out / "model_index.json").is_file() else 0

    losses = kill_and_resume(root, [*args, "--out", str(out)], progress=logged_step,
                             lost=lambda: logged_step() - saved_step(), seed=11)
    assert len(losses) >= KILLS
    assert all(0 <= lost <= CHECKPOINT_EVERY for lost in losses), losses
    assert not (out / "checkpoint").exists()
    straight = load_file(str(root / "straight" / "base" / "model.safetensors"))
    resumed = load_file(str(out / "base" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for name, tensor in straight.items():
        # Stored in float16: a float32 difference in the last bits may round to the neighbouring half-precision
        # value, one unit in the last place (2^-11 relative), so the tolerance is that unit, not an absolute 1e-4.
        assert torch.allclose(tensor.float(), resumed[name].float(), atol=1e-4, rtol=2.0 ** -10), name
    steps = [int(row[0]) for row in log_rows(out / "train_log.csv")]
    assert steps == list(range(1, TRAIN_STEPS + 1))     # every step logged once, none twice


def test_fit_killed_three_times_matches_an_uninterrupted_run(micro):
    root = micro
    out = root / "fit_killed"

    def logged() -> int:
        """Fitting steps logged: joint steps (the log's step column), then one line per frozen subject."""
        rows = log_rows(out / "fit_log.csv")
        joint = max((int(r[3]) for r in rows if r[1] == "joint"), default=0)
        return joint + sum(1 for r in rows if r[1] == "frozen")

    def saved() -> int:
        """Fitting steps that a restart keeps, in the units of `logged`."""
        if (out / "decoder" / "config.json").is_file():
            store = json.loads((out / "triplanes" / "subjects.json").read_text())
            return JOINT_ROUNDS * JOINT_STEPS_PER_ROUND + sum(store["done"]) - 3
        path = out / "checkpoint" / "joint.safetensors"
        if not path.is_file():
            return 0
        with safe_open(str(path), framework="pt") as handle:
            return json.loads(handle.metadata()["joint"])["progress"]["round"] * JOINT_STEPS_PER_ROUND

    losses = kill_and_resume(root, ["fit", str(root / "data"), "--out", str(out), "--preset", "tiny"],
                             progress=lambda: len(log_rows(out / "fit_log.csv")), lost=lambda: logged() - saved(),
                             seed=5)
    assert len(losses) >= KILLS
    assert all(lost <= JOINT_STEPS_PER_ROUND for lost in losses), losses
    straight = load_file(str(root / "fit_straight" / "decoder" / "model.safetensors"))
    resumed = load_file(str(out / "decoder" / "model.safetensors"))
    for name, tensor in straight.items():
        assert torch.allclose(tensor, resumed[name], atol=1e-5), name
    assert np.allclose(np.load(root / "fit_straight" / "triplanes" / "planes.npy"),
                       np.load(out / "triplanes" / "planes.npy"), atol=1e-3)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["subjects_fitted"] == 5 and not (out / "checkpoint" / "joint.safetensors").exists()


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(micro, monkeypatch, capsys):
    """A loss that turns NaN at step 5 stops the run with one line; the checkpoint of step 4 stays, finite,
    and the run resumes from it once the cause is gone."""
    import rodin.diffusion.base as diffusion_base  # where the training loss builds its target
    from rodin import config
    from rodin.cli.main import main

    root, out = micro, micro / "poisoned"
    real_target, calls = diffusion_base.diffusion_target, []

    def poisoned_target(*args):
        calls.append(1)
        target = real_target(*args)
        return target * float("nan") if len(calls) == 5 else target

    monkeypatch.setattr(diffusion_base, "diffusion_target", poisoned_target)
    monkeypatch.setitem(config.PRESETS, "tiny", micro_preset())
    args = ["train", "base", "--triplanes", str(root / "fit_straight"), "--preset", "tiny", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: loss became nan at step 4") and "last good checkpoint" in err[-1]
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    weights = load_file(str(out / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (out / "base").exists()                 # no model saved from a broken run

    monkeypatch.setattr(diffusion_base, "diffusion_target", real_target)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    assert "resuming from step 4" in capsys.readouterr().err
    assert (out / "base" / "model.safetensors").is_file()
