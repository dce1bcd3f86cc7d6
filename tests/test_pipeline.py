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


@pytest.fixture(scope="module")
def staged_model(tiny_model, tmp_path_factory):
    """The tiny model plus stage 3 and 4 components (untrained: the plumbing is under test, not their skill).
    The refiner's last layer gets small random weights so that it differs from plain enlargement."""
    import shutil

    from rodin.diffusion.upsampler import KIND as UPSAMPLER_KIND
    from rodin.diffusion.upsampler import UpsamplerDiffusion
    from rodin.modeling import save_component
    from rodin.pipeline import write_model_index
    from rodin.refine.network import KIND as REFINER_KIND
    from rodin.refine.network import Refiner

    preset = get_preset("tiny")
    out = tmp_path_factory.mktemp("staged") / "tiny"
    shutil.copytree(tiny_model, out)
    torch.manual_seed(0)
    save_component(UpsamplerDiffusion(preset.upsampler), out / "upsampler", kind=UPSAMPLER_KIND)
    refiner = Refiner(preset.refiner)
    torch.nn.init.normal_(refiner.tail.weight, std=0.05)
    save_component(refiner, out / "refiner", kind=REFINER_KIND)
    write_model_index(out, render=preset.render, preset="tiny",
                      components={"upsampler": "upsampler", "refiner": "refiner"})
    return out


def test_pipeline_runs_the_upsampler_after_the_base_model(staged_model):
    pipe = RodinPipeline.from_pretrained(staged_model)
    assert pipe.upsampler is not None and pipe.refiner is not None
    full = pipe.upsampler.config.unet.resolution
    avatar = pipe(seed=4, steps=2)
    assert avatar.planes.shape == (3, pipe.decoder.config.features, full, full)
    assert avatar.info["upsampled"] and torch.isfinite(avatar.planes).all()
    base_only = pipe(seed=4, steps=2, upsample=False)
    side = pipe.base.config.unet.resolution
    assert base_only.planes.shape[-1] == side < full and not base_only.info["upsampled"]
    # The upsampler draws its own noise: the seed's base tri-plane is the same with or without it.
    generator = torch.Generator().manual_seed(4)
    again = pipe.base.sample(None, count=1, steps=2, generator=generator)
    assert torch.equal(again[0], base_only.planes)


def test_refined_views_render_fewer_rays_and_enlarge_them(staged_model, tmp_path):
    import torch.nn.functional as F

    from rodin.io import to_uint8
    from rodin.render.cameras import DEFAULT_FOV_X, turntable_cameras
    from rodin.render.volume import render_with_features

    pipe = RodinPipeline.from_pretrained(staged_model)
    avatar = pipe(seed=4, steps=2)
    scale = pipe.refiner.config.scale
    refined = avatar.views(count=2, resolution=8 * scale)
    plain = avatar.views(count=2, resolution=8 * scale, refine=False)
    assert refined.shape == plain.shape == (2, 8 * scale, 8 * scale, 3)
    # What the refiner read: the same views rendered `scale` times smaller.
    low = render_with_features(avatar.planes, avatar.decoder, turntable_cameras(2, elevation_deg=10.0),
                               DEFAULT_FOV_X, 8, render=avatar.render_config)
    with torch.no_grad():
        expected = pipe.refiner.refine(low)
    assert np.array_equal(refined, to_uint8(expected.permute(0, 2, 3, 1).numpy()))
    bicubic = F.interpolate(low[:, :3], scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    assert not np.array_equal(refined, to_uint8(bicubic.permute(0, 2, 3, 1).numpy()))   # the refiner did work
    # A resolution the scale does not divide falls back to rendering every pixel.
    assert np.array_equal(avatar.views(count=1, resolution=8 * scale + 1),
                          avatar.views(count=1, resolution=8 * scale + 1, refine=False))
    # The avatar file carries its refiner: the loaded avatar renders the same refined views.
    loaded = Avatar.load(avatar.save(tmp_path / "staged.safetensors"))
    assert loaded.refiner is not None
    assert np.array_equal(loaded.views(count=2, resolution=8 * scale), refined)


def test_stages_trained_apart_are_refused_at_load(staged_model, tmp_path):
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(staged_model, broken)
    config = json.loads((broken / "upsampler" / "config.json").read_text())
    config["config"]["base_resolution"] //= 2
    (broken / "upsampler" / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="upsampler reads base planes of side"):
        RodinPipeline.from_pretrained(broken)


def test_batched_sampling_for_evaluation_is_what_single_calls_make(staged_model):
    from rodin.eval.samples import sample_planes

    pipe = RodinPipeline.from_pretrained(staged_model)
    planes = sample_planes(pipe, [4, 5], steps=2)
    assert planes.shape[-1] == pipe.upsampler.config.unet.resolution        # upsampled, as pipe() does
    for k, seed in enumerate((4, 5)):
        assert torch.allclose(planes[k], pipe(seed=seed, steps=2).planes, atol=1e-4)


def test_the_refiner_bench_renders_the_true_turn_where_the_dataset_does(tmp_path):
    """Excess flicker compares against the generator's own views: they must be the dataset's views."""
    import json

    from PIL import Image

    from rodin.bench.fit import BENCH_SEED
    from rodin.bench.hierarchy import _true_turn
    from rodin.data.synth import synth_dataset

    synth_dataset(tmp_path, subjects=2, views=2, resolution=16, seed=BENCH_SEED, portrait_resolution=16,
                  progress=False)
    folder = tmp_path / "subject_00001"
    frames = json.loads((folder / "transforms.json").read_text())["frames"]
    c2w = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float32)
    stored = np.stack([np.asarray(Image.open(folder / f["file_path"]), dtype=np.float32) / 255 for f in frames])
    stored = stored[..., :3] * stored[..., 3:] + (1 - stored[..., 3:])
    truth = _true_turn(1, c2w, 16).permute(0, 2, 3, 1).numpy()
    assert np.abs(truth - stored).max() < 2 / 255


def test_bench_upsampler_and_refiner_report_their_gains(staged_model, tiny_model, capsys):
    import json

    from rodin.cli.main import main

    for name, keys in (("upsampler", {"psnr_upsampled", "psnr_enlarged", "psnr_fitted", "sample_s"}),
                       ("refiner", {"psnr_refined", "psnr_bicubic", "flicker_ratio", "flicker_ratio_bicubic",
                                    "excess_flicker_ratio", "excess_flicker_ratio_bicubic"})):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", name, "--quick", "--model", str(staged_model), "--subjects", "2"])
        assert exit_info.value.code in (0, None)
        figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert keys | {"psnr_gain_db", "step_s"} <= set(figures), figures
        assert all(np.isfinite(figures[k]) for k in keys | {"psnr_gain_db", "step_s"})
    # A model without the stage is told how to get one; --model belongs to the model benchmarks.
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "refiner", "--quick", "--model", str(tiny_model)])
    assert exit_info.value.code == 2 and "rodin train refiner" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "synth", "--model", str(staged_model)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "--model applies to" in err[-1]
