"""FSDP sharding (rodin.train.sharding) in 2 spawned gloo processes: each holds only its slice of the weights,
the EMA and the optimiser moments, and gathering them back gives exactly the whole state it started from,
which is what checkpoints and the saved model are written from. The launched end-to-end runs (each stage
trained with --fsdp equals one process; a one-process checkpoint resumed sharded) are in test_distributed.py.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from diffusers.training_utils import EMAModel

from rodin.config import get_preset
from rodin.refine.network import Refiner

WORLD = 2


def whole_state(seed: int = 0) -> tuple[Refiner, EMAModel, torch.optim.Optimizer]:
    """A tiny refiner after two AdamW steps, with an EMA that has moved off the weights (the same on every rank)."""
    torch.manual_seed(seed)
    model = Refiner(get_preset("tiny").refiner)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = EMAModel(model.parameters(), decay=0.5)
    g = torch.Generator().manual_seed(seed)
    for _ in range(2):
        x = torch.rand(2, model.config.in_channels, 8, 8, generator=g)
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.step(model.parameters())
    return model, ema, optimizer


def round_trip(rank: int, init: str, results: dict) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        from rodin.train.sharding import WholeCopy, shard_training_state

        model, ema, optimizer = whole_state()
        expected = whole_state()            # the same state, never sharded
        copy = WholeCopy(model, optimizer, decay=0.5, main=rank == 0)
        shard_training_state(model, ema, optimizer, device=torch.device("cpu"))
        held = sum(p.to_local().numel() for p in model.parameters())
        total = sum(p.numel() for p in expected[0].parameters())
        moments = sum(v.to_local().numel() for s in optimizer.state.values() for k, v in s.items() if k == "exp_avg")
        got = copy.refresh(model, ema, optimizer)
        if rank == 0:
            m, e, o = got
            ref_m, ref_e, ref_o = expected
            results["weights"] = max((a - b).abs().max().item() for a, b in
                                     zip(m.state_dict().values(), ref_m.state_dict().values()))
            results["ema"] = max((a - b).abs().max().item() for a, b in zip(e.shadow_params, ref_e.shadow_params))
            ref_state, state = ref_o.state_dict()["state"], o.state_dict()["state"]
            results["moments"] = max((state[i][k] - ref_state[i][k]).float().abs().max().item()
                                     for i in ref_state for k in ref_state[i])
            results["ema_moved"] = max((a - b).abs().max().item() for a, b in
                                       zip(ref_e.shadow_params, ref_m.parameters()))
            results["lr"] = o.param_groups[0]["lr"]
        results[f"held_{rank}"] = held / total
        results[f"moments_{rank}"] = moments / total
    finally:
        dist.destroy_process_group()


def test_sharding_keeps_a_slice_per_process_and_gathers_back_the_whole_state(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(round_trip, args=(f"file://{tmp_path / 'store'}", results), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        # Each process holds about half of every tensor (odd first dimensions round the slices).
        assert 0.3 < results[f"held_{rank}"] < 0.7
        assert 0.3 < results[f"moments_{rank}"] < 0.7
    assert results["weights"] == 0 and results["ema"] == 0 and results["moments"] == 0
    assert results["ema_moved"] > 1e-4          # the control: the EMA is not the weights
    assert results["lr"] == pytest.approx(1e-2)


@pytest.mark.parametrize("stage", ["base", "upsampler", "refiner", "prior"])
def test_fsdp_in_one_process_is_refused_in_one_line(capsys, tmp_path, stage):
    """Nothing to shard across: refused before the model folder is made (the run folder need not even exist)."""
    from rodin.cli.main import main

    source = ["--data", str(tmp_path / "data")] if stage == "prior" else ["--triplanes", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", stage, *source, "--out", str(tmp_path / "model"), "--preset", "tiny", "--fsdp", "--cpu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert "--fsdp" in err and "accelerate launch" in err
    assert not (tmp_path / "model").exists()


def test_bench_paper_sharded_holds_half_the_training_state_per_process():
    """`rodin bench paper --fsdp 2` (quick: the tiny preset) measures the sharded step the training verbs run."""
    from rodin.bench.paper import run

    whole = run(quick=True, stages=("base",)).figures["stages"]["base"]
    halves = run(quick=True, stages=("base",), fsdp=2).figures["stages"]["base"]
    assert halves["processes"] == 2 and halves["params"] == whole["params"]
    # weights + gradients + AdamW's two moments: 16 bytes a trained parameter (4 a frozen one: the closed-form
    # heads) in one process, half that in each of two
    held = 16 * whole["params"] + 4 * whole["frozen_params"]
    assert whole["frozen_params"] > 0 and whole["state_mb"] == pytest.approx(held / 2**20, rel=0.05)
    assert halves["state_mb"] / whole["state_mb"] == pytest.approx(0.5, abs=0.1)


def test_bench_fsdp_is_refused_where_it_does_not_apply(capsys):
    from rodin.cli.main import main

    for args in (["bench", "unet", "--fsdp", "2"], ["bench", "paper", "--fsdp", "2", "--stages", "encoder"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "--fsdp" in err and err.count("\n") == 1, err
