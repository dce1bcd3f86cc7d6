"""The product surface: RodinPipeline, avatar files, `rodin generate`, `render` and `export` of avatars."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from rodin.config import get_preset
from rodin.errors import ConfigError, DataError
from rodin.pipeline import Avatar, RodinPipeline


@pytest.fixture(scope="module")
def tiny_model(tiny_fit_run, tmp_path_factory):
    from rodin.train.base import train_base

    preset = get_preset("tiny")
    out = tmp_path_factory.mktemp("model") / "tiny"
    train_base(tiny_fit_run / "run", out, preset=preset, show_progress=False, log=lambda m: None,
               train_config=replace(preset.train_base, steps=10, sample_every=0))
    return out


def portrait_of(tiny_fit_run):
    return next((tiny_fit_run / "data").glob("subject_*/portrait.png"))


def test_pipeline_generates_from_a_portrait_and_from_a_seed(tiny_model, tiny_fit_run):
    pipe = RodinPipeline.from_pretrained(tiny_model)
    u = pipe.base.config.unet
    from_image = pipe(image=portrait_of(tiny_fit_run), seed=1, steps=3)
    again = pipe(image=portrait_of(tiny_fit_run), seed=1, steps=3)
    assert from_image.planes.shape == (3, u.channels, u.resolution, u.resolution)
    assert torch.equal(from_image.planes, again.planes)  # same seed, same avatar, bit for bit
    unconditional = pipe(seed=2, steps=3)
    assert torch.isfinite(unconditional.planes).all()
    assert not torch.equal(unconditional.planes, pipe(seed=3, steps=3).planes)
    array = np.zeros((40, 30, 4), dtype=np.uint8)  # an in-memory RGBA portrait works too
    assert pipe(image=array, seed=1, steps=2).planes.shape == from_image.planes.shape
    views = from_image.views(count=2, resolution=16)
    assert views.shape == (2, 16, 16, 3) and views.dtype == np.uint8


def test_pipeline_refuses_what_the_model_cannot_do(tiny_model, tiny_fit_run):
    pipe = RodinPipeline.from_pretrained(tiny_model)
    with pytest.raises(DataError, match="no text encoder"):
        pipe(prompt="a man with red hair")
    with pytest.raises(ConfigError, match="not both"):
        pipe(image=portrait_of(tiny_fit_run), prompt="a man with red hair")
    with pytest.raises(DataError, match="shape"):
        pipe(image=np.zeros((8, 8)), seed=0)
    with pytest.raises(DataError, match="not a model folder"):
        RodinPipeline.from_pretrained(tiny_model / "base")


def test_avatar_file_round_trips_and_rejects_damage(tiny_model, tmp_path):
    avatar = RodinPipeline.from_pretrained(tiny_model)(seed=5, steps=2)
    path = avatar.save(tmp_path / "a.safetensors")
    loaded = Avatar.load(path)
    assert torch.equal(loaded.planes, avatar.planes)
    assert loaded.info["seed"] == 5 and loaded.render_config == avatar.render_config
    assert np.array_equal(loaded.views(count=1, resolution=12), avatar.views(count=1, resolution=12))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not an avatar"):
        Avatar.load(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="not found"):
        Avatar.load(tmp_path / "missing.safetensors")


def test_cli_generate_writes_every_output(tiny_model, tiny_fit_run, tmp_path):
    from rodin.cli.main import main

    out = tmp_path / "gen"
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(tiny_model), "--image", str(portrait_of(tiny_fit_run)), "--out", str(out),
              "--steps", "2", "--frames", "4", "--resolution", "16", "--mesh-resolution", "24"])
    assert exit_info.value.code in (0, None)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["avatar.safetensors", "compare.png", "mesh.glb", "turntable.gif", "turntable.mp4", "views.png"]
    assert Avatar.load(out / "avatar.safetensors").info["image"].endswith("portrait.png")

    with pytest.raises(SystemExit) as exit_info:  # the avatar renders and exports on its own
        main(["render", str(out / "avatar.safetensors"), "--out", str(tmp_path / "grid.png"), "--frames", "2",
              "--resolution", "16"])
    assert exit_info.value.code in (0, None) and (tmp_path / "grid.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--image", "{missing}"], "portrait not found"),
    (["--prompt", "a woman with a cap"], "text"),
    (["--model", "{nomodel}"], "not a model folder"),
])
def test_cli_generate_bad_input_is_one_line(tiny_model, tmp_path, capsys, args, message):
    from rodin.cli.main import main

    args = [a.format(missing=tmp_path / "nope.png", nomodel=tmp_path) for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_model)]
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_eval_sheet_shows_portraits_beside_samples(tiny_model, tiny_fit_run, tmp_path):
    from PIL import Image

    from rodin.cli.main import main

    out = tmp_path / "sheet.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "sheet", str(tiny_model), "--data", str(tiny_fit_run / "data"), "--count", "1",
              "--unconditional", "1", "--resolution", "16", "--out", str(out)])
    assert exit_info.value.code in (0, None)
    with Image.open(out) as sheet:
        assert sheet.size == (5 * 16, 2 * 16)  # portrait + 4 angles, one conditioned and one free row


def test_a_sample_too_faint_for_the_surface_level_still_gets_its_mesh(tiny_model, tmp_path, monkeypatch, capsys):
    import rodin.render.mesh
    from rodin.cli.generate import write_outputs

    avatar = RodinPipeline.from_pretrained(tiny_model)(seed=5, steps=2)
    peak = float(rodin.render.mesh.density_grid(avatar.planes, avatar.decoder, resolution=16, empty_below=0).max())
    monkeypatch.setattr(rodin.render.mesh, "DEFAULT_THRESHOLD", 1.5 * peak)   # this field is "faint" now
    with pytest.raises(rodin.render.mesh.FaintFieldError):
        avatar.mesh(resolution=16)
    write_outputs(avatar, tmp_path / "out", frames=2, resolution=12, mesh_resolution=16, mesh=True)
    assert (tmp_path / "out" / "mesh.glb").stat().st_size > 0
    note = capsys.readouterr().err
    assert "note: the field is empty" in note and "mesh.glb drawn at density" in note
