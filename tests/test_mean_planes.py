"""The base model's mean-planes head: a regression of the planes from z that the UNet refines."""

import json
from dataclasses import replace

import pytest
import torch

from rodin.config import BaseModelConfig, DiffusionConfig, UNetConfig, get_preset
from rodin.diffusion.base import BaseDiffusion
from rodin.diffusion.mean_planes import MeanPlanes
from rodin.errors import ConfigError

UNET = UNetConfig(channels=4, resolution=8, width=16, multipliers=(1, 2), blocks=1, attention_resolutions=(4,),
                  heads=2, latent_dim=6, groups=4)


def _model(prediction: str = "sample", **config) -> BaseDiffusion:
    torch.manual_seed(0)
    return BaseDiffusion(BaseModelConfig(unet=UNET, diffusion=DiffusionConfig(prediction=prediction),
                                         mean_planes=True, **config))


def test_head_writes_a_roll_out_and_the_null_z_gives_one_average():
    head = MeanPlanes(UNET)
    out = head(torch.cat([torch.randn(2, 6), torch.zeros(2, 6)]))
    assert out.shape == (4, 4, 8, 24)
    assert torch.equal(out[2], out[3]) and not torch.allclose(out[0], out[1])
    with pytest.raises(ConfigError, match="plane side"):
        MeanPlanes(replace(UNET, resolution=12))


def test_an_untrained_unet_predicts_the_head_and_the_head_learns_only_from_its_own_loss():
    model = _model()
    noisy, z, t = torch.randn(2, 4, 8, 24), torch.randn(2, 6), torch.tensor([999, 10])
    out, mean = model(noisy, t, z, with_mean=True)
    assert torch.equal(out, mean)              # the UNet's last convolution starts at zero: x0 = the head
    torch.nn.functional.mse_loss(out, torch.randn_like(out)).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.mean_planes.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.unet.parameters())
    v_model = _model("v_prediction")
    v_out, v_mean = v_model(noisy, t, z, with_mean=True)
    assert not torch.allclose(v_out, v_mean)   # v is not a sample: the head is only an input there


def test_the_head_tells_two_subjects_apart_from_their_z():
    model = _model()
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(2, 4, 8, 24, generator=g)
    latent = torch.randn(2, 6, generator=g)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        noise = torch.randn(clean.shape, generator=g)
        t = torch.randint(0, 1000, (2,), generator=g)
        loss = model.loss(clean, latent, noise=noise, timesteps=t, keep_latent=torch.ones(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        mean = model.mean_planes(latent)
    own = (mean - clean).pow(2).mean(dim=(1, 2, 3))
    swapped = (mean - clean.flip(0)).pow(2).mean(dim=(1, 2, 3))
    assert (own < 0.5 * swapped).all(), (own, swapped)
    # From pure noise at t = T the model's clean estimate is each subject's own planes, not their average.
    with torch.no_grad():
        x0 = model(torch.randn(clean.shape, generator=g), torch.tensor([999, 999]), latent)
    assert ((x0 - clean).pow(2).mean(dim=(1, 2, 3)) < 0.5 * (x0 - clean.flip(0)).pow(2).mean(dim=(1, 2, 3))).all()


def test_train_base_with_the_head_records_its_held_out_error_and_reloads(tiny_fit_run, tmp_path):
    from rodin.diffusion.base import KIND
    from rodin.modeling import load_component
    from rodin.train.base import train_base

    preset = get_preset("tiny")
    tcfg = replace(preset.train_base, steps=3, batch=4, checkpoint_every=3, sample_every=0, log_every=1)
    mcfg = replace(preset.base, mean_planes=True, diffusion=replace(preset.base.diffusion, prediction="sample"))
    figures = train_base(tiny_fit_run / "run", tmp_path / "model", preset=preset, model_config=mcfg,
                         train_config=tcfg, show_progress=False, log=lambda m: None)
    assert 0 < figures["heldout_mean_error"] < 10
    info = json.loads((tmp_path / "model" / "train_base.json").read_text())
    assert info["model"]["mean_planes"] is True
    assert "heldout_mean_error" in (tmp_path / "model" / "train_log.csv").read_text().splitlines()[0]
    model = load_component(BaseDiffusion, BaseModelConfig, tmp_path / "model" / "base", kind=KIND)
    assert model.mean_planes is not None
    planes = model.sample(torch.randn(2, model.latent_dim), steps=2, generator=torch.Generator().manual_seed(0))
    assert planes.shape[:3] == (2, 3, preset.triplane.channels) and torch.isfinite(planes).all()
    with pytest.raises(ConfigError, match="mean_weight"):
        train_base(tiny_fit_run / "run", tmp_path / "negative", preset=preset, train_config=tcfg,
                   model_config=replace(mcfg, mean_weight=-1.0), show_progress=False, log=lambda m: None)
    assert not (tmp_path / "negative").exists()


def test_ridge_recovers_a_linear_map_and_the_null_z_gives_the_training_mean():
    from rodin.diffusion.mean_planes import RidgeSums, fit_ridge
    from rodin.diffusion.unet import unit_rms

    g = torch.Generator().manual_seed(2)
    latent = torch.randn(60, 6, generator=g)
    truth_w = torch.randn(6, 4 * 8 * 24, generator=g)
    mean = torch.randn(4, 8, 24, generator=g)
    rolled = mean + (unit_rms(latent) @ truth_w).reshape(60, 4, 8, 24)
    sums = RidgeSums(mean)
    for z, planes in zip(latent.split(16), rolled.split(16)):     # streamed in chunks, as from a store
        sums.add(z, planes)
    head = MeanPlanes(UNET, "linear")
    penalty = fit_ridge(head, sums, penalties=(1e-6, 1.0, 100.0))
    assert penalty == 1e-6                                        # noiseless data: the least penalty predicts best
    with torch.no_grad():
        assert torch.allclose(head(latent), rolled, atol=1e-3)
        assert torch.allclose(head(torch.zeros(1, 6))[0], mean, atol=1e-6)
    with pytest.raises(ConfigError, match="mean_head"):
        MeanPlanes(UNET, "cubic")


def test_train_base_with_a_linear_head_fits_it_before_training_and_keeps_it(tiny_fit_run, tmp_path):
    from rodin.diffusion.base import KIND
    from rodin.modeling import load_component
    from rodin.train.base import train_base

    preset = get_preset("tiny")
    tcfg = replace(preset.train_base, steps=3, batch=4, checkpoint_every=3, sample_every=0, log_every=1)
    mcfg = replace(preset.base, mean_planes=True, mean_head="linear",
                   diffusion=replace(preset.base.diffusion, prediction="sample"))
    said = []
    figures = train_base(tiny_fit_run / "run", tmp_path / "model", preset=preset, model_config=mcfg,
                         train_config=tcfg, show_progress=False, log=said.append)
    assert any("ridge regression" in line for line in said)
    assert 0 < figures["heldout_mean_error"] < 10
    # Frozen: twice the steps move the UNet, not the head (fitted in closed form before the first step).
    longer = train_base(tiny_fit_run / "run", tmp_path / "longer", preset=preset, model_config=mcfg,
                        train_config=replace(tcfg, steps=6, checkpoint_every=6), show_progress=False,
                        log=lambda m: None)
    assert longer["heldout_mean_error"] == pytest.approx(figures["heldout_mean_error"], rel=1e-3)
    short, long = (load_component(BaseDiffusion, BaseModelConfig, tmp_path / name / "base", kind=KIND)
                   for name in ("model", "longer"))
    assert short.mean_planes.kind == "linear"
    assert torch.equal(short.mean_planes.linear.weight, long.mean_planes.linear.weight)
    assert not torch.equal(short.unet.conv_in.local.weight, long.unet.conv_in.local.weight)
    with pytest.raises(ConfigError, match="mean_head"):
        train_base(tiny_fit_run / "run", tmp_path / "bad", preset=preset, train_config=tcfg,
                   model_config=replace(mcfg, mean_head="cubic"), show_progress=False, log=lambda m: None)
    assert not (tmp_path / "bad").exists()
