"""Stage 2: 3D-aware convolution, the UNet, the base diffusion model and its training."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from rodin.config import BaseModelConfig, DiffusionConfig, UNetConfig, from_dict, get_preset
from rodin.diffusion.aware_conv import TriplaneConv, axis_contexts, fold, literal_aware_conv, unfold
from rodin.diffusion.base import BaseDiffusion
from rodin.diffusion.unet import TriplaneUNet
from rodin.errors import ConfigError
from rodin.triplane.triplane import roll_out

R = 8  # plane side in the convolution tests

# Which world axes a plane's (height, width) index: DESIGN.md's table.
PLANE_AXES = {0: ("y", "x"), 1: ("z", "x"), 2: ("z", "y")}


def test_fold_is_the_per_plane_view_of_the_roll_out():
    planes = torch.randn(2, 3, 4, R, R)
    folded = fold(roll_out(planes))
    assert torch.equal(folded, planes.reshape(6, 4, R, R))
    assert torch.equal(unfold(folded), roll_out(planes))


def test_axis_contexts_follow_the_design_table():
    planes = torch.randn(1, 3, 2, R, R)
    xy, xz, yz = planes[0]
    rows, cols = axis_contexts(planes.reshape(3, 2, R, R))
    # XY: row context over x from XZ (mean over z), column context over y from YZ (mean over z)
    assert torch.allclose(rows[0], xz.mean(dim=1)) and torch.allclose(cols[0], yz.mean(dim=1))
    # XZ: row over x from XY (mean over y), column over z from YZ (mean over y)
    assert torch.allclose(rows[1], xy.mean(dim=1)) and torch.allclose(cols[1], yz.mean(dim=2))
    # YZ: row over y from XY (mean over x), column over z from XZ (mean over x)
    assert torch.allclose(rows[2], xy.mean(dim=2)) and torch.allclose(cols[2], xz.mean(dim=2))


@pytest.mark.parametrize("stride", [1, 2])
def test_aware_conv_equals_concatenate_then_convolve(stride):
    torch.manual_seed(0)
    conv = TriplaneConv(5, 7, stride=stride)
    x = torch.randn(6, 5, R, R)
    assert torch.allclose(conv(x), literal_aware_conv(conv, x), atol=1e-5)


@pytest.mark.parametrize("plane", [0, 1, 2])
def test_a_change_reaches_only_the_lines_through_the_same_3d_point(plane):
    """Perturb one texel; on every other plane only the row or column band that the 3D line
    through that texel projects to may change, and it must change."""
    torch.manual_seed(1)
    conv = TriplaneConv(3, 4, aware=True)
    x = torch.randn(3, 3, R, R)
    h0, w0 = 5, 2
    bumped = x.clone()
    bumped[plane, :, h0, w0] += 10.0
    changed = (conv(bumped) - conv(x)).abs().amax(dim=1) > 1e-5  # (3, R, R)
    coordinate = dict(zip(PLANE_AXES[plane], (h0, w0)))
    for other in range(3):
        if other == plane:
            near = torch.zeros(R, R, dtype=torch.bool)
            near[h0 - 1:h0 + 2, w0 - 1:w0 + 2] = True
            assert changed[other][near].any() and not changed[other][~near].any()
            continue
        height_axis, width_axis = PLANE_AXES[other]
        band = torch.zeros(R, R, dtype=torch.bool)
        shared = [a for a in (height_axis, width_axis) if a in coordinate]
        assert len(shared) == 1  # two planes share exactly one axis
        axis = shared[0]
        c = coordinate[axis]
        if axis == height_axis:
            band[max(0, c - 1):c + 2, :] = True   # rows near the fixed coordinate
        else:
            band[:, max(0, c - 1):c + 2] = True   # columns near it
        assert changed[other][band].any(), f"plane {other} never sees the change"
        assert not changed[other][~band].any(), f"plane {other} changed off the projected line"


def test_plain_conv_keeps_planes_apart():
    conv = TriplaneConv(3, 4, aware=False)
    x = torch.randn(3, 3, R, R)
    bumped = x.clone()
    bumped[0, :, 0, R - 1] += 10.0  # at XY's right border, next to XZ in the roll-out
    delta = (conv(bumped) - conv(x)).abs().amax(dim=(1, 2, 3))
    assert delta[0] > 0 and delta[1] == 0 and delta[2] == 0


def tiny_unet_config(**changes) -> UNetConfig:
    return replace(get_preset("tiny").base.unet, **changes)


@pytest.mark.parametrize("conv", ["aware", "plain"])
def test_unet_maps_roll_outs_to_roll_outs_and_starts_at_zero(conv):
    cfg = tiny_unet_config(conv=conv)
    model = TriplaneUNet(cfg)
    x = torch.randn(2, cfg.channels, cfg.resolution, 3 * cfg.resolution)
    out = model(x, torch.tensor([3, 900]), torch.randn(2, cfg.latent_dim))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer: starts as "predict no noise"


def test_spatial_conditioning_tells_the_unet_where_and_what():
    """With position and z planes at the input, a denoiser given a constant input writes different
    things at different texels, and different z write different planes (before any training)."""
    torch.manual_seed(0)
    config = replace(tiny_unet_config(), position_channels=4, latent_channels=4)
    unet = TriplaneUNet(config).eval()
    torch.nn.init.normal_(unet.conv_out.local.weight, std=0.1)   # the output layer starts at zero
    r = config.resolution
    flat = torch.zeros(2, config.channels, r, 3 * r)
    z = torch.nn.functional.normalize(torch.randn(2, config.latent_dim), dim=-1)
    with torch.no_grad():
        out = unet(flat, torch.tensor([999, 999]), z)
        plain = TriplaneUNet(tiny_unet_config()).eval()
        torch.nn.init.normal_(plain.conv_out.local.weight, std=0.1)
        blind = plain(flat, torch.tensor([999, 999]), z)
    inner = (slice(None), slice(None), slice(3, r - 3), slice(3, r - 3))     # away from the borders
    assert out.shape == flat.shape
    assert fold(out)[inner].std(dim=(2, 3)).mean() > 10 * fold(blind)[inner].std(dim=(2, 3)).mean()
    assert (out[0] - out[1]).abs().mean() > 0.1 * out.abs().mean()
    with pytest.raises(ConfigError, match="negative"):
        TriplaneUNet(replace(tiny_unet_config(), latent_channels=-1))


def test_unet_rejects_wrong_shapes_and_bad_configs():
    cfg = tiny_unet_config()
    with pytest.raises(ValueError, match="roll-outs"):
        TriplaneUNet(cfg)(torch.randn(1, cfg.channels, cfg.resolution, 2 * cfg.resolution), torch.tensor([1]),
                          torch.zeros(1, cfg.latent_dim))
    with pytest.raises(ConfigError, match="conv"):
        TriplaneUNet(tiny_unet_config(conv="spherical"))
    with pytest.raises(ConfigError, match="halved"):
        TriplaneUNet(tiny_unet_config(resolution=12, multipliers=(1, 2, 2, 2)))
    with pytest.raises(ConfigError, match="multipliers"):
        from_dict(UNetConfig, {"multipliers": "12"})
    assert from_dict(UNetConfig, {"multipliers": [1, 2, 4]}).multipliers == (1, 2, 4)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_training_lowers_the_loss_on_a_fixed_batch(prediction):
    torch.manual_seed(0)
    config = BaseModelConfig(unet=tiny_unet_config(), diffusion=DiffusionConfig(prediction=prediction))
    model = BaseDiffusion(config)
    u = config.unet
    planes = torch.randn(4, 3, u.channels, u.resolution, u.resolution) * 0.3 + 0.1
    model.set_stats(planes.mean(dim=(0, 1, 3, 4)), planes.std(dim=(0, 1, 3, 4)))
    clean = model.normalise(planes)
    latent = torch.randn(4, u.latent_dim)
    noise = torch.randn_like(clean)
    t = torch.tensor([50, 300, 600, 900])
    keep = torch.ones(4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = model.loss(clean, latent, noise=noise, timesteps=t, keep_latent=keep).item()
    for _ in range(40):
        loss = model.loss(clean, latent, noise=noise, timesteps=t, keep_latent=keep)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first  # measured: 0.54x (epsilon), 0.71x (v) after 40 steps


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_sampling_gives_finite_planes_deterministically(sampler):
    torch.manual_seed(0)
    cfg = BaseModelConfig(unet=tiny_unet_config(), diffusion=DiffusionConfig(sample_steps=4))
    model = BaseDiffusion(cfg).eval()
    z = torch.randn(2, cfg.unet.latent_dim)
    a = model.sample(z, sampler=sampler, generator=torch.Generator().manual_seed(3))
    b = model.sample(z, sampler=sampler, generator=torch.Generator().manual_seed(3))
    u = cfg.unet
    assert a.shape == (2, 3, u.channels, u.resolution, u.resolution)
    assert torch.isfinite(a).all() and torch.equal(a, b)
    unconditional = model.sample(None, count=3, sampler=sampler, generator=torch.Generator().manual_seed(3))
    assert unconditional.shape[0] == 3
    with pytest.raises(ConfigError, match="sampler"):
        model.sample(z, sampler="euler")


def test_statistics_round_trip():
    model = BaseDiffusion(BaseModelConfig(unet=tiny_unet_config()))
    planes = torch.randn(3, 3, 8, 16, 16) * 2 + 1
    model.set_stats(planes.mean(dim=(0, 1, 3, 4)), planes.std(dim=(0, 1, 3, 4)))
    rolled = model.normalise(planes)
    assert rolled.shape == (3, 8, 16, 48)
    assert abs(rolled.mean().item()) < 0.05 and abs(rolled.std().item() - 1) < 0.05
    assert torch.allclose(model.denormalise(rolled), planes, atol=1e-5)


# --- training from a fit run: the CI end-to-end test of stage 2 -----------------------------


def train(run, out, **changes):
    from rodin.train.base import train_base

    preset = get_preset("tiny")
    settings = dict(steps=12, batch=4, checkpoint_every=6, sample_every=12, log_every=3)
    tcfg = replace(preset.train_base, **{**settings, **changes})
    return train_base(run, out, preset=preset, train_config=tcfg, show_progress=False, log=lambda m: None)


def test_fit_train_sample_render(tiny_fit_run, tmp_path):
    from rodin.diffusion.base import KIND
    from rodin.modeling import load_component
    from rodin.train.base import render_planes
    from rodin.triplane.decoder import TriplaneDecoder

    figures = train(tiny_fit_run / "run", tmp_path / "model")
    model_dir = tmp_path / "model"
    assert figures["steps"] == 12 and figures["train_subjects"] >= 2
    assert not (model_dir / "checkpoint").exists()
    assert (model_dir / "samples" / "step_0000012.png").is_file()
    log = (model_dir / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,") and len(log) == 1 + 4
    model = load_component(BaseDiffusion, BaseModelConfig, model_dir / "base", kind=KIND)
    assert model.plane_std.min() > 0
    decoder = load_component(TriplaneDecoder, type(get_preset("tiny").decoder), model_dir / "decoder",
                             kind="triplane-decoder")
    planes = model.sample(torch.randn(1, model.latent_dim), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(planes).all()
    images = render_planes(planes[0], decoder, get_preset("tiny").render, azimuths=[0.0, 90.0], resolution=16)
    assert images.shape == (2, 16, 16, 3)
    info = json.loads((model_dir / "train_base.json").read_text())
    assert info["figures"]["steps"] == 12


def test_the_render_loss_trains_the_base_model(tiny_fit_run, tmp_path):
    """render_weight > 0 reads the fit run's decoder and views, and its gradient reaches the UNet."""
    from safetensors.torch import load_file

    from rodin.train.base import train_base

    preset = get_preset("tiny")
    tcfg = replace(preset.train_base, steps=6, batch=4, checkpoint_every=6, sample_every=0, log_every=3)
    quiet = dict(preset=preset, train_config=tcfg, show_progress=False, log=lambda m: None)
    train_base(tiny_fit_run / "run", tmp_path / "plain", **quiet)
    rendered = replace(preset.base, render_weight=5.0, render_patches=2, render_views=2)
    figures = train_base(tiny_fit_run / "run", tmp_path / "rendered", model_config=rendered, **quiet)
    assert figures["steps"] == 6
    info = json.loads((tmp_path / "rendered" / "train_base.json").read_text())
    assert info["model"]["render_weight"] == 5.0
    plain = load_file(str(tmp_path / "plain" / "base" / "model.safetensors"))
    with_render = load_file(str(tmp_path / "rendered" / "base" / "model.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in with_render.values())
    changed = [k for k in plain if not torch.equal(plain[k], with_render[k])]
    assert len(changed) > len(plain) // 2        # same seed and batches: only the render term differs
    with pytest.raises(ConfigError, match="render_patches"):
        train_base(tiny_fit_run / "run", tmp_path / "none", model_config=replace(rendered, render_patches=0),
                   **quiet)


def test_interrupted_training_resumes_to_the_same_model(tiny_fit_run, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import rodin.train.steps as trainer  # the shared loop writes the checkpoints

    train(tiny_fit_run / "run", tmp_path / "straight", sample_every=0)
    real_save = trainer.save_checkpoint

    def save_then_die(out, **kwargs):
        real_save(out, **kwargs)
        raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_fit_run / "run", tmp_path / "resumed", sample_every=0)
    assert (tmp_path / "resumed" / "checkpoint" / "state.json").is_file()
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    train(tiny_fit_run / "run", tmp_path / "resumed", sample_every=0)
    a = load_file(str(tmp_path / "straight" / "base" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "base" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    log = (tmp_path / "resumed" / "train_log.csv").read_text().splitlines()
    steps = [int(line.split(",")[0]) for line in log[1:]]
    assert steps == sorted(set(steps))  # no step logged twice after the resume


def test_resuming_with_other_settings_is_refused(tiny_fit_run, tmp_path, monkeypatch):
    import rodin.train.steps as trainer  # the shared loop writes the checkpoints

    real_save = trainer.save_checkpoint

    def save_then_die(out, **kwargs):
        real_save(out, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_fit_run / "run", tmp_path / "m", sample_every=0)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    with pytest.raises(ConfigError, match="other settings"):
        train(tiny_fit_run / "run", tmp_path / "m", sample_every=0, lr=5e-4)


def test_cli_train_base_reports_bad_input(tmp_path):
    from rodin.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "base", "--triplanes", str(tmp_path / "nothing"), "--out", str(tmp_path / "m"),
              "--preset", "tiny"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "base", "--triplanes", str(tmp_path), "--out", str(tmp_path / "m"), "--preset", "tiny",
              "--conv", "round"])
    assert exit_info.value.code == 2


def test_half_precision_weights_sample_like_full_precision(tmp_path):
    """The trained base model is stored in float16 (half the size); its samples must not change."""
    from rodin.diffusion.base import KIND
    from rodin.modeling import load_component, save_component

    torch.manual_seed(0)
    model = BaseDiffusion(BaseModelConfig(unet=tiny_unet_config(), diffusion=DiffusionConfig(sample_steps=4)))
    with torch.no_grad():
        for param in model.parameters():  # away from the zero-initialised start, so outputs are non-trivial
            param.add_(torch.randn_like(param) * 0.05)
    save_component(model, tmp_path / "base", kind=KIND, dtype=torch.float16)
    loaded = load_component(BaseDiffusion, BaseModelConfig, tmp_path / "base", kind=KIND)
    z = torch.randn(2, model.latent_dim)
    full = model.eval().sample(z, generator=torch.Generator().manual_seed(0))
    half = loaded.eval().sample(z, generator=torch.Generator().manual_seed(0))
    assert (full - half).abs().max() < 0.02 * full.abs().max()
