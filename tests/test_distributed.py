"""Every stage under `accelerate launch` with 2 CPU processes (gloo) gives the result of one process.

Training stages: each process takes its rows of the same global batch (drawn from a generator shared
by all), so DDP's averaged gradients equal the one-process mean; accumulation micro-batches keep the
same examples. Each comparison has a control (another batch or another seed) that must differ, which
shows the tolerance can fail. Fitting: in the joint decoder stage each rank fits the planes of its own
joint subjects and the decoder gradients are summed, which gives the one-process decoder; in the frozen
stage each rank fits the shard its rank names, the last one merges, and the merged store equals an
unsharded run. One tiny dataset serves every stage, and each stage is
launched once (process start-up is most of the cost).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rodin.config import get_preset
from rodin.data.synth import synth_dataset
from rodin.fit.run import DECODER_KIND, list_sources
from rodin.fit.store import TriplaneStore
from rodin.modeling import save_component
from rodin.triplane.decoder import TriplaneDecoder

QUIET = dict(log=lambda m: None, show_progress=False)
TINY = get_preset("tiny")


def launch(*args: str, cwd: Path, cpu: bool = True) -> dict:
    """`accelerate launch` 2 CPU processes of the rodin CLI (torchrun underneath, gloo backend); the
    last JSON line printed. The training verbs take --cpu; `rodin fit` runs on the CPU anyway."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "rodin.cli.main", *args, *(["--cpu"] if cpu else [])]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def max_difference(a: Path, b: Path) -> float:
    """The largest weight difference beyond one step of the stored precision: weights saved in half
    precision that differ by a float32 rounding can land on neighbouring halves (2^-11 apart near 1)."""
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    worst = 0.0
    for k in x:
        u, v = x[k].float(), y[k].float()
        step = torch.zeros_like(u)
        if x[k].dtype in (torch.float16, torch.bfloat16):
            bits = 10 if x[k].dtype == torch.float16 else 7
            step = torch.exp2(torch.floor(torch.log2(torch.maximum(u.abs(), v.abs()).clamp_min(2.0 ** -14))) - bits)
        worst = max(worst, ((u - v).abs() - step).clamp_min(0.0).max().item())
    return worst


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """5 tiny subjects with portraits (4 views: 3 to fit, 1 held out): the data of every stage."""
    root = tmp_path_factory.mktemp("dist")
    synth_dataset(root / "data", subjects=5, views=4, resolution=16, portrait_resolution=32, progress=False)
    return root


@pytest.fixture(scope="module")
def fake_run(root):
    """A store of random planes and a random decoder: what `rodin train base` reads from a fit run."""
    sources = list_sources(root / "data")
    t = TINY.triplane
    store = TriplaneStore.create(root / "run" / "triplanes", [s.id for s in sources], ["train"] * len(sources),
                                 (3, t.channels, t.resolution, t.resolution))
    g = torch.Generator().manual_seed(0)
    store.put(list(range(len(sources))), 0.3 * torch.randn(len(sources), 3, t.channels, t.resolution, t.resolution,
                                                           generator=g))
    torch.manual_seed(0)
    save_component(TriplaneDecoder(TINY.decoder), root / "run" / "decoder", kind=DECODER_KIND)
    (root / "run" / "fit_config.json").write_text(json.dumps({"data": str(root / "data")}))
    return root / "run"


@pytest.fixture(scope="module")
def encoder_model(root):
    """The tiny dual encoder trained for 3 steps in one process (the reference, and the prior's z)."""
    from rodin.train.encoder import train_encoder

    train_encoder(root / "data", root / "enc_one", config=TINY.encoder,
                  train=replace(TINY.train_encoder, steps=3, batch=4), cpu=True, **QUIET)
    return root / "enc_one"


def test_base_training_on_two_processes_equals_one(root, fake_run):
    from rodin.train.base import train_base

    one, half, two = root / "base_one", root / "base_half", root / "base_two"
    cfg = replace(TINY.train_base, steps=4, batch=4, lr=5e-3)
    train_base(fake_run, one, preset=TINY, train_config=cfg, cpu=True, **QUIET)
    train_base(fake_run, half, preset=TINY, train_config=replace(cfg, batch=2), cpu=True, **QUIET)
    # 2 processes x 2 accumulation micro-batches of 1 example = the same batch of 4, read ahead by a
    # DataLoader worker in each process.
    figures = launch("train", "base", "--triplanes", str(fake_run), "--out", str(two), "--preset", "tiny",
                     "--steps", "4", "--batch", "4", "--lr", "5e-3", "--grad-accum", "2", "--workers", "1", cwd=root)
    assert figures["processes"] == 2
    weights = "base/model.safetensors"
    assert max_difference(one / weights, two / weights) < 2e-4
    assert max_difference(one / weights, half / weights) > 2e-3      # the control: another batch differs
    # Only the main process wrote the log: one line per logged step, no repeats.
    assert (two / "train_log.csv").read_text().count("\n4,") == 1


@pytest.mark.parametrize("stage", ["upsampler", "refiner"])
def test_stage_three_and_four_training_on_two_processes_equals_one(root, fake_run, stage):
    from rodin.train.refiner import train_refiner
    from rodin.train.upsampler import train_upsampler

    train, defaults = {"upsampler": (train_upsampler, TINY.train_upsampler),
                       "refiner": (train_refiner, TINY.train_refiner)}[stage]
    one, other, two = root / f"{stage}_one", root / f"{stage}_other", root / f"{stage}_two"
    cfg = replace(defaults, steps=3, batch=4, lr=5e-3)
    train(fake_run, one, preset=TINY, train_config=cfg, cpu=True, **QUIET)
    train(fake_run, other, preset=TINY, train_config=replace(cfg, seed=1), cpu=True, **QUIET)
    figures = launch("train", stage, "--triplanes", str(fake_run), "--out", str(two), "--preset", "tiny",
                     "--steps", "3", "--batch", "4", "--lr", "5e-3", cwd=root)
    assert figures["processes"] == 2
    weights = f"{stage}/model.safetensors"
    assert max_difference(one / weights, two / weights) < 2e-4
    assert max_difference(one / weights, other / weights) > 2e-3     # the control: other draws differ
    # Sharded (FSDP): each process holds half of every block; the saved model is whole and the same.
    sharded = root / f"{stage}_fsdp"
    launch("train", stage, "--triplanes", str(fake_run), "--out", str(sharded), "--preset", "tiny",
           "--steps", "3", "--batch", "4", "--lr", "5e-3", "--fsdp", cwd=root)
    assert max_difference(one / weights, sharded / weights) < 2e-4


def test_sharded_base_training_resumes_a_one_process_checkpoint_and_equals_one(root, fake_run, monkeypatch):
    """`rodin train base --fsdp` on 2 processes picks up a checkpoint one process wrote at step 2 of 4 (whole
    weights, EMA and AdamW moments, cut into each process's slices) and ends where one process ends."""
    import rodin.train.steps as steps
    from rodin.train.base import train_base

    one, two = root / "base_fsdp_one", root / "base_fsdp_two"
    cfg = replace(TINY.train_base, steps=4, batch=4, lr=5e-3, checkpoint_every=2)
    train_base(fake_run, one, preset=TINY, train_config=cfg, cpu=True, **QUIET)
    real_save = steps.save_checkpoint

    def save_then_stop(*a, **kw):
        real_save(*a, **kw)
        raise KeyboardInterrupt                   # killed right after step 2 was saved

    monkeypatch.setattr(steps, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_base(fake_run, two, preset=TINY, train_config=cfg, cpu=True, **QUIET)
    monkeypatch.setattr(steps, "save_checkpoint", real_save)
    at_step_2 = two / "base_at_step_2.safetensors"
    shutil.copy(two / "checkpoint" / "ema.safetensors", at_step_2)
    figures = launch("train", "base", "--triplanes", str(fake_run), "--out", str(two), "--preset", "tiny",
                     "--steps", "4", "--batch", "4", "--lr", "5e-3", "--checkpoint-every", "2", "--fsdp", cwd=root)
    assert figures["processes"] == 2 and not (two / "checkpoint").exists()
    weights = "base/model.safetensors"
    assert max_difference(one / weights, two / weights) < 2e-4
    final = {k: v.float() for k, v in load_file(str(one / weights)).items()}
    halfway = load_file(str(at_step_2))
    # The control: the EMA two steps earlier is far outside the tolerance (saved in float16, hence 1e-3).
    assert max((final[k] - halfway[k].float()).abs().max().item() for k in halfway if k in final) > 1e-3


def test_encoder_training_on_two_processes_equals_one(root, encoder_model):
    from rodin.train.encoder import train_encoder

    train = replace(TINY.train_encoder, steps=3, batch=4)
    cache = ".caption_vectors.safetensors"           # the captions' backbone vectors, embedded once
    for name in ("enc_other", "enc_two"):
        (root / name).mkdir()
        shutil.copy(encoder_model / cache, root / name / cache)
    train_encoder(root / "data", root / "enc_other", config=TINY.encoder, train=replace(train, seed=1), cpu=True,
                  **QUIET)
    figures = launch("train", "encoder", "--data", str(root / "data"), "--out", str(root / "enc_two"),
                     "--preset", "tiny", "--steps", "3", "--batch", "4", cwd=root)
    assert figures["processes"] == 2
    weights = "semantic/model.safetensors"
    assert max_difference(encoder_model / weights, root / "enc_two" / weights) < 2e-4
    assert max_difference(encoder_model / weights, root / "enc_other" / weights) > 2e-3   # the control


def test_prior_training_on_two_processes_equals_one(root, encoder_model):
    from rodin.semantic.loading import load_semantic
    from rodin.train.prior import train_prior

    folders = {name: root / f"prior_{name}" for name in ("one", "half", "two", "fsdp")}
    for folder in folders.values():
        shutil.copytree(encoder_model / "semantic", folder / "semantic")
    encoder = load_semantic(encoder_model / "semantic")
    config = replace(TINY.prior, dim=encoder.dim)
    train = replace(TINY.train_prior, steps=2)           # the tiny preset's batch of 32
    run = dict(encoder=encoder, config=config, portraits=TINY.train_encoder, cpu=True, **QUIET)
    train_prior(root / "data", folders["one"], train=train, **run)
    cache = folders["one"] / ".caption_vectors.safetensors"   # the captions' backbone vectors, embedded once
    for name in ("half", "two", "fsdp"):
        shutil.copy(cache, folders[name] / cache.name)
    train_prior(root / "data", folders["half"], train=replace(train, batch=16), **run)
    figures = launch("train", "prior", "--data", str(root / "data"), "--out", str(folders["two"]),
                     "--preset", "tiny", "--steps", "2", "--grad-accum", "2", cwd=root)
    assert figures["processes"] == 2
    weights = "prior/model.safetensors"
    assert max_difference(folders["one"] / weights, folders["two"] / weights) < 1e-6
    assert max_difference(folders["one"] / weights, folders["half"] / weights) > 1e-4   # the control
    # Sharded (FSDP): the same weights, gathered whole into the saved prior.
    launch("train", "prior", "--data", str(root / "data"), "--out", str(folders["fsdp"]),
           "--preset", "tiny", "--steps", "2", "--fsdp", cwd=root)
    assert max_difference(folders["one"] / weights, folders["fsdp"] / weights) < 1e-5


def test_fitting_on_two_processes_equals_one(root):
    """`rodin fit` launched on 2 processes: rank I fits shard I/2 of the frozen stage, the last one merges."""
    from rodin.fit.run import fit_dataset

    decoder = root / "fit_decoder"               # a given decoder: the frozen stage fits all 5 subjects
    torch.manual_seed(1)
    save_component(TriplaneDecoder(TINY.decoder), decoder, kind=DECODER_KIND)
    preset = replace(TINY, fit=replace(TINY.fit, steps=2))
    # Bit equality needs the same summation order, so the reference runs on one thread like the launched ranks.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = fit_dataset(root / "data", root / "fit_whole", preset=preset, decoder_path=decoder, **QUIET)
        fit_dataset(root / "data", root / "fit_two", preset=preset, decoder_path=decoder, joint_only=True, **QUIET)
    finally:
        torch.set_num_threads(threads)
    launch("fit", str(root / "data"), "--out", str(root / "fit_two"), "--preset", "tiny", "--steps", "2",
           "--decoder", str(decoder), cwd=root, cpu=False)
    # Batches of 4: rank 0 fitted subjects 0-3, rank 1 subject 4, each into its own shard.
    assert [len(TriplaneStore.open(root / "fit_two" / "shards" / f"{i}-of-2" / "triplanes").ids)
            for i in range(2)] == [4, 1]
    a = TriplaneStore.open(root / "fit_whole" / "triplanes")
    b = TriplaneStore.open(root / "fit_two" / "triplanes")
    assert a.ids == b.ids and all(a.done) and all(b.done)
    assert np.array_equal(np.asarray(a.planes), np.asarray(b.planes))
    assert torch.equal(a.stats().mean, b.stats().mean) and torch.equal(a.stats().std, b.stats().std)
    merged = json.loads((root / "fit_two" / "metrics.json").read_text())
    assert merged["shards"] == 2 and merged["subjects_fitted"] == whole["subjects_fitted"] == 5
    # Exact equality of written rows: the merge filled every row (no zero rows equal on both sides).
    assert all(np.abs(np.asarray(b.planes[r], dtype=np.float32)).max() > 0 for r in range(5))


def test_batches_read_ahead_by_workers_equal_batches_read_in_process(fake_run):
    """What the launched base test relies on: a worker's batches are those of the training process, and
    two processes' shares of a step are the one-process batch cut in two."""
    from rodin.train.base_batches import BaseSteps, step_loader

    store = TriplaneStore.open(fake_run / "triplanes")
    common = dict(resolution=16, channels=8, seed=3, batch=4, train_timesteps=1000, latent_dropout=0.2,
                  first=2, steps=5)
    whole = list(step_loader(BaseSteps(store, [0, 1, 2, 3, 4], share=slice(0, 4), **common), workers=0,
                             pin_memory=False))
    ahead = list(step_loader(BaseSteps(store, [0, 1, 2, 3, 4], share=slice(0, 4), **common), workers=2,
                             pin_memory=False))
    halves = [list(step_loader(BaseSteps(store, [0, 1, 2, 3, 4], share=share, **common), workers=0,
                               pin_memory=False)) for share in (slice(0, 2), slice(2, 4))]
    assert [b.step for b in whole] == [b.step for b in ahead] == [2, 3, 4]
    for k, batch in enumerate(whole):
        assert torch.equal(batch.rows, ahead[k].rows) and torch.equal(batch.noise, ahead[k].noise)
        assert torch.equal(batch.planes, ahead[k].planes)
        assert torch.equal(batch.planes, torch.cat([halves[0][k].planes, halves[1][k].planes]))
        assert torch.equal(batch.rows, halves[1][k].rows)
    assert not torch.equal(whole[0].rows, whole[1].rows) or not torch.equal(whole[0].noise, whole[1].noise)


def test_joint_decoder_stage_on_two_processes_equals_one(root, monkeypatch):
    """`rodin fit --joint-only` launched on 2 processes: each fits the planes of the joint subjects it owns,
    the decoder gradients are summed, and the decoder is the one-process decoder. The launched run resumes
    a checkpoint that one process wrote after round 1 of 2 (so resuming on another layout is tested too);
    its 3 subjects form one turn split 2 + 1, so each process's loss must be weighted by its share."""
    from rodin.fit.run import JointCheckpoint, fit_dataset
    from rodin.fit.shards import joint_subjects

    args = dict(max_subjects=3, joint_only=True, **QUIET)
    preset = replace(TINY, fit=replace(TINY.fit, joint_rounds=2, joint_steps_per_turn=3))
    fit_dataset(root / "data", root / "joint_one", preset=preset, **args)

    real_save = JointCheckpoint.save

    def save_then_stop(self, *a, **kw):
        real_save(self, *a, **kw)
        raise KeyboardInterrupt                   # killed right after round 1 was saved

    monkeypatch.setattr(JointCheckpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        fit_dataset(root / "data", root / "joint_two", preset=preset, **args)
    monkeypatch.setattr(JointCheckpoint, "save", real_save)
    after_round_1 = {k[len("decoder."):]: v for k, v in
                     load_file(str(root / "joint_two" / "checkpoint" / "joint.safetensors")).items()
                     if k.startswith("decoder.")}
    figures = launch("fit", str(root / "data"), "--out", str(root / "joint_two"), "--preset", "tiny", "--joint-only",
                     "--subjects", "3", "--joint-rounds", "2", "--joint-steps", "3", cwd=root, cpu=False)
    assert figures["subjects_fitted"] == 3
    weights = "decoder/model.safetensors"
    assert max_difference(root / "joint_one" / weights, root / "joint_two" / weights) < 1e-5
    one = load_file(str(root / "joint_one" / weights))
    # The control: one round fewer (3 steps) is far outside the tolerance.
    assert max((one[k] - after_round_1[k]).abs().max().item() for k in one) > 1e-3
    a = np.asarray(TriplaneStore.open(root / "joint_one" / "triplanes").planes, dtype=np.float32)
    b = np.asarray(TriplaneStore.open(root / "joint_two" / "triplanes").planes, dtype=np.float32)
    assert np.abs(a).max() > 0 and np.allclose(a, b, atol=2e-3)       # float16 rows, gathered to the main process
    assert max_difference(root / "joint_one" / "decoder" / "template.safetensors",
                          root / "joint_two" / "decoder" / "template.safetensors") < 1e-4
    # Only the main process wrote the log (one line per turn) and the checkpoint is gone.
    assert (root / "joint_two" / "fit_log.csv").read_text().count(",joint,2,") == 1
    assert not (root / "joint_two" / "checkpoint" / "joint.safetensors").exists()
    assert joint_subjects(root / "joint_two") == joint_subjects(root / "joint_one") and \
        len(joint_subjects(root / "joint_one")) == 3
