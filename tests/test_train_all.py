"""`rodin train all`: every stage into one model folder, stage by stage across sessions, with its card."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import torch

from rodin import config
from rodin.cli.main import main
from rodin.pipeline import RodinPipeline
from rodin.train import all as train_all_module
from rodin.train.all import CARD, RECORD, STAGES, Plan, Progress


def run_cli(*args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture
def quick_tiny(monkeypatch):
    """The tiny preset with far fewer steps per stage: this file tests the orchestration (order, resuming,
    the model folder, the card); each stage's own test file checks what that stage learns."""
    tiny = config.PRESETS["tiny"]
    quick = replace(
        tiny,
        fit=replace(tiny.fit, joint_rounds=1, joint_steps_per_turn=15, steps=15),
        train_encoder=replace(tiny.train_encoder, steps=6),
        train_base=replace(tiny.train_base, steps=6),
        train_prior=replace(tiny.train_prior, steps=6),
        train_reader=replace(tiny.train_reader, captions=512, steps=5),
        train_upsampler=replace(tiny.train_upsampler, steps=4),
        train_refiner=replace(tiny.train_refiner, steps=4),
        train_judge=replace(tiny.train_judge, steps=3, batch=8),
    )
    monkeypatch.setitem(config.PRESETS, "tiny", quick)
    return quick


def test_train_all_stage_by_stage_then_resumes_to_a_loadable_model(quick_tiny, tmp_path, capsys):
    model, work = tmp_path / "model", tmp_path / "work"
    args = ["train", "all", "--preset", "tiny", "--out", str(model), "--work", str(work), "--subjects", "6"]

    code, out, err = run_cli(*args, "--until", "data", capsys=capsys)
    assert code == 0, err
    assert list(json.loads((model / RECORD).read_text())["stages"]) == ["data"]
    # The first 6 subjects are all in the train split; hold 4 out (as test_eval_samples does) so that the
    # held-out figures, FID/KID among them, are computed too.
    index = json.loads((work / "data" / "index.json").read_text())
    for entry in index["subjects"][2:]:
        entry["split"] = "val"
    (work / "data" / "index.json").write_text(json.dumps(index))

    code, out, err = run_cli(*args, "--until", "base", capsys=capsys)
    assert code == 0, err
    assert "data: finished earlier, skipped" in err
    first = json.loads((model / RECORD).read_text())
    assert list(first["stages"]) == ["data", "fit", "encoder", "base"]
    assert json.loads(out.strip().splitlines()[-1])["not_yet_trained"] == ["prior", "upsampler", "refiner", "judge",
                                                                             "eval"]
    card = (model / CARD).read_text()
    assert "not yet trained: prior, upsampler, refiner, judge, eval" in card
    assert "| rays averaged per pixel | 9 (3 × 3) |" in card
    assert "| prior |" in card and "| — | — | not yet trained |" in card

    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 0, err
    record = json.loads((model / RECORD).read_text())
    assert list(record["stages"]) == list(STAGES) and record["unfinished"] == {}
    for stage in ("data", "fit", "encoder", "base"):       # finished in the first call: skipped, not redone
        assert f"{stage}: finished earlier, skipped" in err
        assert record["stages"][stage] == first["stages"][stage]
    for stage in ("prior", "upsampler", "refiner", "judge", "eval"):
        assert f"{stage}: finished earlier" not in err
        entry = record["stages"][stage]
        assert entry["wall_s"] >= 0 and entry["machine"]["cores"] >= 1 and entry["command"] == record["commands"][2]
        assert entry["wall_s"] > 0 or stage == "eval"
    assert record["stages"]["fit"]["figures"]["subjects_fitted"] == 6
    figures = {stage: record["stages"][stage]["figures"] for stage in STAGES}
    assert figures["data"]["heldout"] == 0                    # as generated
    # The encoder (and the prior, the edit directions and the judge) learn from identities of their own, a few
    # views each, not from the fit dataset's: 16 at this preset, 2 of them held out.
    identities = work / "identities"
    assert figures["data"]["identities"]["folder"] == str(identities)
    assert figures["encoder"]["subjects"] == 2 and 0 <= figures["encoder"]["image_to_text_top1"] <= 1
    assert json.loads((model / "encoder_metrics.json").read_text())["data"] == str(identities)
    assert figures["refiner"]["figures_on"] == "heldout"
    assert figures["eval"]["fid"] >= 0 and figures["eval"]["fid_floor"] >= 0 and figures["eval"]["samples"] == 8
    assert json.loads((model / "eval_samples.json").read_text())["figures"]["fid"] == figures["eval"]["fid"]

    # The model folder ships the components its index names, not the dataset or the fit run.
    index = json.loads((model / "model_index.json").read_text())
    components = index["components"]
    assert set(components) == {"base", "decoder", "semantic", "prior", "reader", "upsampler", "refiner", "edits"}
    for folder in components.values():
        assert (model / folder / "config.json").is_file()
    assert (model / "judge" / "config.json").is_file()
    assert figures["judge"]["data"] == str(identities)
    assert figures["judge"]["train_subjects"] + figures["judge"]["heldout_subjects"] == 16
    assert (work / "data" / "index.json").is_file() and (work / "fit" / "triplanes").is_dir()
    assert not (model / "data").exists() and not (model / "triplanes").exists()

    pipe = RodinPipeline.from_pretrained(model)
    assert pipe.upsampler is not None and pipe.refiner is not None and pipe.prior is not None
    avatar = pipe(seed=3, steps=2)
    assert torch.isfinite(avatar.planes).all()
    assert avatar.planes.shape[-1] == quick_tiny.triplane.resolution      # upsampled from the base side
    views = avatar.views(count=2, resolution=16)
    assert views.shape == (2, 16, 16, 3) and views.min() < views.max()
    from_text = pipe(prompt="a woman with red hair", seed=3, steps=2)   # the prior is part of the model
    assert torch.isfinite(from_text.planes).all()

    card = (model / CARD).read_text()
    for command in record["commands"]:
        assert command in card
    assert "--until data" in record["commands"][0] and "--until base" in record["commands"][1]
    assert "--until" not in record["commands"][2]
    assert figures["eval"]["command"] in card
    for stage in STAGES:
        assert f"| {stage} |" in card and f"### {stage}" in card
    assert "not yet trained" not in card
    assert f"16 of their own, 6 views each, seed 1 (`{identities}`)" in card
    psnr = record["stages"]["fit"]["figures"]["heldout_psnr_mean"]
    assert f"held-out PSNR dB {psnr:.4g}" in card                      # numbers come from the record

    # A third call finds everything done and trains nothing.
    began = time.perf_counter()
    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 0 and time.perf_counter() - began < 30
    assert json.loads((model / RECORD).read_text())["stages"] == record["stages"]

    # Resuming with other settings would mix two models: refused in one line.
    code, _, err = run_cli(*args[:-1], "7", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--subjects 6" in err


def test_train_all_bad_input_is_one_line(tmp_path, capsys):
    model = tmp_path / "model"
    code, _, err = run_cli("train", "all", "--preset", "tiny", "--out", str(model), "--until", "upsample",
                           capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'upsample'" in err and ", ".join(STAGES) in err
    assert not model.exists()                               # refused before any work

    code, _, err = run_cli("train", "all", "--preset", "tiny", "--out", str(model), "--work", str(model / "w"),
                           capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "overlap" in err

    shipped = tmp_path / "shipped"                          # a model `train all` did not start is left alone
    shipped.mkdir()
    (shipped / "model_index.json").write_text("{}")
    code, _, err = run_cli("train", "all", "--preset", "tiny", "--out", str(shipped), capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "did not start" in err

    code, _, err = run_cli("train", "all", "--preset", "huge", "--out", str(model), capsys=capsys)
    assert code == 2 and "unknown preset" in err


def test_time_on_an_interrupted_stage_adds_up_over_sessions(tmp_path, monkeypatch):
    monkeypatch.setattr(train_all_module, "HEARTBEAT_S", 0.05)
    plan = Plan(preset=config.get_preset("tiny"), out=tmp_path / "model", work=tmp_path / "work", subjects=6)
    plan.out.mkdir()

    def interrupted() -> dict:
        time.sleep(0.2)
        raise KeyboardInterrupt

    progress = Progress(plan, "rodin train all (first session)")
    with pytest.raises(KeyboardInterrupt):
        progress.run("data", interrupted, cpu=True)
    kept = json.loads((plan.out / RECORD).read_text())
    assert kept["stages"] == {} and kept["unfinished"]["data"]["seconds"] >= 0.2
    assert kept["unfinished"]["data"]["sessions"] == 1
    assert "interrupted; resumes" in (plan.out / CARD).read_text()

    progress = Progress(plan, "rodin train all (second session)")
    progress.run("data", lambda: {"subjects": 6}, cpu=True)
    entry = json.loads((plan.out / RECORD).read_text())["stages"]["data"]
    assert entry["sessions"] == 2 and entry["wall_s"] >= 0.2 and entry["figures"] == {"subjects": 6}
    assert entry["command"] == "rodin train all (second session)"


def test_a_run_begun_before_averaged_pixels_keeps_one_ray_per_pixel(quick_tiny, tmp_path, capsys):
    """A record from before the generator averaged rays names none: its data, half made or whole, has one ray
    per pixel, and a resumed run must not remake it (or make the rest) with another kind of pixel."""
    model, work = tmp_path / "model", tmp_path / "work"
    args = ["train", "all", "--preset", "tiny", "--out", str(model), "--work", str(work), "--subjects", "2",
            "--until", "data"]
    code, _, err = run_cli(*args, capsys=capsys)
    assert code == 0, err
    first = work / "data" / "subject_00000" / "transforms.json"
    assert json.loads(first.read_text())["rodin"]["supersample"] == 3
    record = json.loads((model / RECORD).read_text())
    del record["data"]["supersample"]
    record["stages"] = {}
    (model / RECORD).write_text(json.dumps(record))
    code, _, err = run_cli(*args, capsys=capsys)
    assert code == 0, err
    assert json.loads(first.read_text())["rodin"]["supersample"] == 1
    assert "| rays averaged per pixel | 1 (the generator before 2026-12-05) |" in (model / CARD).read_text()
