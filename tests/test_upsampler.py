"""Stage 3 on the tiny preset: the upsampler diffusion's shapes, conditioning, learning, saving and resume.

The fit run is faked (as in test_distributed.py): a store of smooth random planes beside a tiny
synthetic dataset (for the portraits that give z) and a random decoder, so no fitting is needed.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from rodin.config import UpsamplerConfig, get_preset
from rodin.data.synth import synth_dataset
from rodin.diffusion.upsampler import KIND, UpsamplerDiffusion
from rodin.errors import ConfigError
from rodin.fit.run import DECODER_KIND, list_sources
from rodin.fit.store import TriplaneStore
from rodin.modeling import load_component, save_component
from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.triplane import resize_planes, roll_out

TINY = get_preset("tiny")
QUIET = dict(log=lambda m: None, show_progress=False)


def smooth_planes(n: int, channels: int, resolution: int, seed: int) -> torch.Tensor:
    """Planes with structure at several scales (coarse random fields enlarged, plus finer ones)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 3, channels, resolution, resolution)
    for side, weight in ((4, 0.3), (8, 0.2), (resolution, 0.05)):
        out += weight * resize_planes(torch.randn(n, 3, channels, side, side, generator=g), resolution,
                                      mode="bicubic")
    return out


def fake_run(root, *, subjects: int = 4):
    """A dataset with portraits, a store of planes and a random decoder: what a fit run leaves."""
    synth_dataset(root / "data", subjects=subjects, views=2, resolution=16, portrait_resolution=32, progress=False)
    sources = list_sources(root / "data")
    t = TINY.triplane
    store = TriplaneStore.create(root / "run" / "triplanes", [s.id for s in sources], ["train"] * len(sources),
                                 (3, t.channels, t.resolution, t.resolution))
    store.put(list(range(len(sources))), smooth_planes(len(sources), t.channels, t.resolution, seed=0))
    torch.manual_seed(0)
    save_component(TriplaneDecoder(TINY.decoder), root / "run" / "decoder", kind=DECODER_KIND)
    (root / "run" / "fit_config.json").write_text(json.dumps({"data": str(root / "data")}))
    return root / "run"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fake_run(tmp_path_factory.mktemp("upsampler"))


def tiny_model(seed: int = 0) -> UpsamplerDiffusion:
    torch.manual_seed(seed)
    return UpsamplerDiffusion(TINY.upsampler)


def test_shapes_finite_and_condition_is_the_enlarged_base():
    model = tiny_model()
    cfg = TINY.upsampler
    c, r, big = cfg.unet.channels, cfg.base_resolution, cfg.unet.resolution
    low = torch.randn(2, 3, c, r, r)
    level = torch.zeros(2)
    condition = model.condition(low, noise_level=level)
    assert condition.shape == (2, c, big, 3 * big)
    assert torch.allclose(condition, roll_out(resize_planes(low, big, mode="bicubic")))
    # Corruption changes the condition only where asked: example 1 is blurred, example 0 is not.
    blurred = model.condition(low, noise_level=level, blur=torch.tensor([0.0, 1.0]))
    assert torch.allclose(blurred[0], condition[0], atol=1e-6)
    assert (blurred[1] - condition[1]).abs().max() > 0.1
    noisy = torch.randn(2, c, big, 3 * big)
    out = model(noisy, torch.tensor([10, 900]), condition, torch.randn(2, cfg.unet.latent_dim), level)
    assert out.shape == noisy.shape and torch.isfinite(out).all()
    planes = model.sample(low, torch.randn(2, cfg.unet.latent_dim), steps=2,
                          generator=torch.Generator().manual_seed(0))
    assert planes.shape == (2, 3, c, big, big) and torch.isfinite(planes).all()
    with pytest.raises(ValueError, match="base planes of side 16"):
        model.condition(torch.randn(1, 3, c, 8, 8), noise_level=torch.zeros(1))
    with pytest.raises(ConfigError, match="condition_mode"):
        UpsamplerDiffusion(replace(cfg, condition_mode="nearest"))


def test_the_condition_reaches_the_output():
    """The concatenated condition is read: after one training step, changing it changes the prediction."""
    model = tiny_model()
    cfg = TINY.upsampler
    c, big = cfg.unet.channels, cfg.unet.resolution
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    clean = torch.randn(2, c, big, 3 * big)
    cond = torch.randn(2, c, big, 3 * big)
    z, t, level = torch.zeros(2, cfg.unet.latent_dim), torch.tensor([500, 500]), torch.zeros(2)
    model.loss(clean, cond, z, level, noise=torch.randn_like(clean), timesteps=t).backward()
    opt.step()
    x = torch.randn(2, c, big, 3 * big)
    a, b = model(x, t, cond, z, level), model(x, t, cond + 1.0, z, level)
    assert cfg.residual
    a, b = a - cond, b - (cond + 1.0)               # what the UNet itself adds to the condition
    assert (a - b).abs().max() > 1e-4


def test_an_untrained_residual_upsampler_is_the_enlargement_and_the_plain_one_is_not():
    """Residual x0: the zeroed last layer makes the first sample exactly the bicubic enlargement, so
    training starts from the baseline the bar is measured against."""
    low = smooth_planes(2, TINY.upsampler.unet.channels, TINY.upsampler.base_resolution, seed=4)
    enlarged = resize_planes(low, TINY.upsampler.unet.resolution, mode="bicubic")
    made = tiny_model().sample(low, sample_noise=0.0, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(made, enlarged, atol=1e-4)
    torch.manual_seed(0)
    plain = UpsamplerDiffusion(replace(TINY.upsampler, residual=False))
    made = plain.sample(low, sample_noise=0.0, steps=3, generator=torch.Generator().manual_seed(0))
    assert (made - enlarged).abs().max() > 0.05
    with pytest.raises(ConfigError, match="x0 prediction"):
        UpsamplerDiffusion(replace(TINY.upsampler, diffusion=replace(TINY.upsampler.diffusion,
                                                                     prediction="epsilon")))
    # An upsampler saved before the setting existed (no "residual" key) loads as it was trained: not residual.
    from dataclasses import asdict

    from rodin.config import from_dict
    saved = {k: v for k, v in asdict(TINY.upsampler).items() if k != "residual"}
    assert from_dict(UpsamplerConfig, saved).residual is False


def test_loss_goes_down_on_a_fixed_batch():
    model = tiny_model()
    cfg = TINY.upsampler
    planes = model.normalise(smooth_planes(2, cfg.unet.channels, cfg.unet.resolution, seed=1))
    clean = roll_out(planes)
    # A condition far blurrier than the planes (shrunk to 4 texels), so there is structure to learn on top of it.
    coarse = resize_planes(resize_planes(planes, 4), cfg.base_resolution, mode="bicubic")
    condition = model.condition(coarse, noise_level=torch.zeros(2))
    g = torch.Generator().manual_seed(0)
    # Low noise levels: the answer is in the input, so a working model learns it within a few dozen steps.
    noise, t = torch.randn(clean.shape, generator=g), torch.tensor([20, 60])
    z, level = torch.randn(2, cfg.unet.latent_dim, generator=g), torch.zeros(2)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = model.loss(clean, condition, z, level, noise=noise, timesteps=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(v == v for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def train(run, out, **overrides):
    from rodin.train.upsampler import train_upsampler

    tcfg = replace(TINY.train_upsampler, steps=6, batch=2, warmup=1, checkpoint_every=2, log_every=1, **overrides)
    return train_upsampler(run, out, preset=TINY, train_config=tcfg, cpu=True, **QUIET)


def test_train_save_load_and_resume(run, tmp_path, monkeypatch):
    import rodin.train.upsampler as stage

    figures = train(run, tmp_path / "whole")
    assert figures["steps"] == 6 and figures["plane_mse"] == figures["plane_mse"]
    assert not (tmp_path / "whole" / ".upsampler_state" / "checkpoint").exists()
    model = load_component(UpsamplerDiffusion, UpsamplerConfig, tmp_path / "whole" / "upsampler", kind=KIND)
    low = resize_planes(smooth_planes(1, 8, 32, seed=3), 16)
    planes = model.sample(low, steps=2, generator=torch.Generator().manual_seed(0))
    assert planes.shape == (1, 3, 8, 32, 32) and torch.isfinite(planes).all()
    assert torch.allclose(model.plane_std, TriplaneStore.open(run / "triplanes").get([0, 1, 2, 3]).transpose(0, 2)
                          .reshape(8, -1).std(dim=1), rtol=1e-3)
    assert train(run, tmp_path / "whole") == figures          # finished: nothing to redo

    real = stage.draw_step

    def dies_at_step_5(*args, step, **kwargs):
        if step == 5:
            raise KeyboardInterrupt
        return real(*args, step=step, **kwargs)

    monkeypatch.setattr(stage, "draw_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(run, tmp_path / "cut")
    assert json.loads((tmp_path / "cut" / ".upsampler_state" / "checkpoint" / "state.json").read_text())["step"] == 4
    monkeypatch.setattr(stage, "draw_step", real)
    train(run, tmp_path / "cut")
    whole = load_file(str(tmp_path / "whole" / "upsampler" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "upsampler" / "model.safetensors"))
    assert max((whole[k] - resumed[k]).abs().max().item() for k in whole) < 1e-6
    other = train(run, tmp_path / "seed1", seed=1)                      # control: the comparison can fail
    reseeded = load_file(str(tmp_path / "seed1" / "upsampler" / "model.safetensors"))
    assert max((whole[k] - reseeded[k]).abs().max().item() for k in whole) > 1e-4
    assert other["steps"] == 6
    with pytest.raises(ConfigError, match="other settings"):
        train(run, tmp_path / "whole", lr=5e-3)


def test_cli_trains_and_reports_json(run, tmp_path, capsys):
    from rodin.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["train", "upsampler", "--triplanes", str(run), "--out", str(tmp_path / "m"), "--preset", "tiny",
              "--steps", "2", "--batch", "2", "--cpu"])
    assert info.value.code == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["steps"] == 2 and (tmp_path / "m" / "upsampler" / "model.safetensors").is_file()
    tiny_base = json.loads((tmp_path / "m" / "upsampler" / "config.json").read_text())["config"]["base_resolution"]
    with pytest.raises(SystemExit) as info:        # an upsampler for a base model of another side
        main(["train", "upsampler", "--triplanes", str(run), "--out", str(tmp_path / "m4"), "--preset", "tiny",
              "--steps", "1", "--batch", "2", "--cpu", "--base-resolution", str(tiny_base // 2)])
    assert info.value.code == 0
    saved = json.loads((tmp_path / "m4" / "upsampler" / "config.json").read_text())["config"]
    assert saved["base_resolution"] == tiny_base // 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["train", "upsampler", "--triplanes", str(tmp_path / "nowhere"), "--out", str(tmp_path / "n"),
              "--preset", "tiny", "--cpu"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and "nowhere" in err


@pytest.mark.parametrize("prediction", ["sample", "epsilon", "v_prediction"])
def test_the_clean_planes_implied_by_a_perfect_output_are_the_clean_planes(prediction):
    from rodin.config import DiffusionConfig
    from rodin.diffusion.base import diffusion_target, predicted_clean, training_scheduler

    scheduler = training_scheduler(DiffusionConfig(prediction=prediction))
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(3, 4, 8, 24, generator=g), torch.randn(3, 4, 8, 24, generator=g)
    t = torch.tensor([0, 500, 980])
    noisy = scheduler.add_noise(clean, noise, t)
    implied = predicted_clean(scheduler, noisy, diffusion_target(scheduler, clean, noise, t), t)
    assert torch.allclose(implied, clean, atol=1e-3)


def test_render_loss_patches_land_in_the_foreground_and_teach_the_planes(run):
    from rodin.refine.pairs import load_options
    from rodin.train.render_loss import ViewBank, draw_patches, patch_pixels, render_patch_loss

    folders = [s.path for s in list_sources(run.parent / "data")]
    bank = ViewBank.load(folders, views=3, background=1.0, options=load_options(run))
    assert bank.rgb.shape == (4, 3, 16, 16, 3) and bank.rgb.dtype == torch.uint8   # 2 views repeated to fill 3
    g = torch.Generator().manual_seed(0)
    draw = draw_patches(g, batch=4, views=3, patches=5)
    draw.anywhere[:] = False
    rows, cols = patch_pixels(bank, torch.arange(4), draw, patch=4)
    assert rows.shape == (4, 5, 4, 4)
    box = bank.boxes[torch.arange(4), draw.view]
    centre_r, centre_c = rows[..., 2, 2].float(), cols[..., 2, 2].float()
    assert ((centre_r >= box[:, None, 0] - 2) & (centre_r <= box[:, None, 2] + 2)).all()
    assert ((centre_c >= box[:, None, 1] - 2) & (centre_c <= box[:, None, 3] + 2)).all()

    decoder = load_component(TriplaneDecoder, type(TINY.decoder), run / "decoder", kind=DECODER_KIND)
    decoder.requires_grad_(False)
    planes = torch.nn.Parameter(smooth_planes(4, TINY.triplane.channels, 16, seed=5))
    opt = torch.optim.Adam([planes], lr=0.05)
    fixed = draw_patches(torch.Generator().manual_seed(1), batch=4, views=3, patches=4)
    losses = []
    for _ in range(25):
        loss = render_patch_loss(planes, decoder, bank, torch.arange(4), fixed, patch=4, samples=16, background=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # A random decoder cannot show every colour; the loss still falls at once when gradients reach the planes.
    assert planes.grad.abs().sum() > 0 and losses[-1] < 0.95 * losses[0], losses[::6]


def test_the_render_loss_needs_the_fit_runs_decoder(run, tmp_path):
    import shutil

    bare = tmp_path / "run"
    shutil.copytree(run, bare)
    shutil.rmtree(bare / "decoder")
    with pytest.raises(ConfigError, match="render_weight"):
        train(bare, tmp_path / "m")
