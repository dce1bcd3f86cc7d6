"""The base model's text head: prompts start from a ridge regression of the planes on their text embedding."""

import shutil
from dataclasses import replace

import pytest
import torch

from rodin.cli.main import main
from rodin.config import BaseModelConfig, DiffusionConfig, UNetConfig, get_preset
from rodin.diffusion.base import KIND, BaseDiffusion
from rodin.diffusion.mean_planes import RidgeSums
from rodin.errors import ConfigError
from rodin.modeling import load_component
from rodin.pipeline import RodinPipeline
from rodin.semantic.edit import EditDirections

UNET = UNetConfig(channels=4, resolution=8, width=16, multipliers=(1, 2), blocks=1, attention_resolutions=(4,),
                  heads=2, latent_dim=6, groups=4)


def test_a_text_head_needs_the_mean_planes_head_and_a_given_mean_replaces_the_heads():
    with pytest.raises(ConfigError, match="mean_planes"):
        BaseDiffusion(BaseModelConfig(unet=UNET, text_head=True))
    torch.manual_seed(0)
    model = BaseDiffusion(BaseModelConfig(unet=UNET, diffusion=DiffusionConfig(prediction="sample"),
                                          mean_planes=True, mean_head="linear", text_head=True))
    z, noise = torch.randn(2, 6), torch.randn(2, 4, 8, 24)
    given = torch.randn(2, 4, 8, 24)
    # An untrained UNet adds nothing (its last convolution starts at zero): one step from t = T returns the mean.
    out = model(noise, torch.tensor([999, 999]), z, mean=given)
    assert torch.equal(out, given)
    assert torch.equal(model(noise, torch.tensor([999, 999]), z), model.mean_planes(z))
    plain = model.sample(z, noise=noise, steps=2, guidance_scale=1.0)
    assert not torch.allclose(model.sample(z, noise=noise, steps=2, guidance_scale=1.0, mean=given), plain)
    assert model.sample(z, noise=noise, steps=2, guidance_scale=2.0, mean=given).isfinite().all()
    with pytest.raises(ValueError, match="does not fit"):
        model.sample(z, noise=noise, steps=2, mean=given[:1])


def test_rows_held_apart_by_subject_fall_on_one_side_of_the_penalty_choice():
    sums = RidgeSums(torch.zeros(2))
    x, y = torch.randn(6, 3), torch.randn(6, 2)
    check = torch.tensor([True, True, False, False, False, True])
    sums.add(x, y, check=check)
    from rodin.diffusion.unet import unit_rms

    u = unit_rms(x).double()
    assert torch.allclose(sums.sums["check"][0], u[check].T @ u[check])
    assert torch.allclose(sums.sums["fit"][0], u[~check].T @ u[~check])


def test_the_tiny_model_draws_a_prompt_from_its_text_head(tiny_semantic_model):
    pipe = RodinPipeline.from_pretrained(tiny_semantic_model)
    assert pipe.base.config.text_head and pipe.base.text_planes is not None      # the tiny preset's default
    red, blue = (pipe.prompt_mean(p) for p in ("a person with red hair", "a person in a blue hoodie"))
    assert red.shape == (1, *pipe.base.mean_planes.shape) and not torch.allclose(red, blue)
    avatar = pipe(prompt="a person with red hair", seed=4, steps=3, upsample=False)
    z = pipe.encode_prompt("a person with red hair", seed=4)
    g = torch.Generator().manual_seed(4)
    assert torch.allclose(avatar.planes[None], pipe.base.sample(z, count=1, steps=3, generator=g, mean=red), atol=1e-5)
    g = torch.Generator().manual_seed(4)
    assert not torch.allclose(avatar.planes[None], pipe.base.sample(z, count=1, steps=3, generator=g))
    # An edit of a prompt's avatar starts from the same text-head planes: at strength 0 it is the same avatar.
    pipe._edits = EditDirections(pipe.semantic, min_similarity=-1.0)   # a tiny encoder: accept any direction
    same = pipe.edit(avatar, edit="with glasses", strength=0.0, steps=3)
    assert torch.allclose(same.planes, avatar.planes, atol=1e-5)
    moved = pipe.edit(avatar, edit="with glasses", strength=1.0, steps=3)
    assert not torch.allclose(moved.planes, avatar.planes, atol=1e-3)


def test_train_text_head_adds_one_to_a_trained_base_and_keeps_the_rest(tiny_semantic_model, tiny_fit_run,
                                                                        tmp_path, capsys):
    from rodin.train.base import train_base

    def run(*args):
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        return exit_info.value.code or 0, capsys.readouterr().err

    model = tmp_path / "model"
    shutil.copytree(tiny_semantic_model, model)
    preset = get_preset("tiny")
    shutil.rmtree(model / "base")
    (model / "train_base.json").unlink()
    train_base(tiny_fit_run / "run", model, preset=preset, model_config=replace(preset.base, text_head=False),
               train_config=replace(preset.train_base, steps=4), show_progress=False, log=lambda m: None)
    before = load_component(BaseDiffusion, BaseModelConfig, model / "base", kind=KIND)
    assert before.text_planes is None
    code, err = run("train", "text-head", "--out", str(model), "--triplanes", str(tiny_fit_run / "run"))
    assert code == 0, err
    after = load_component(BaseDiffusion, BaseModelConfig, model / "base", kind=KIND)
    assert after.config.text_head and after.text_planes is not None
    kept = after.state_dict()
    for name, tensor in before.state_dict().items():
        assert torch.equal(kept[name], tensor), name
    # A base without the mean-planes head has nowhere to put the text head's planes: one line, nothing written.
    plain = tmp_path / "plain"
    shutil.copytree(tiny_semantic_model, plain)
    shutil.rmtree(plain / "base")
    (plain / "train_base.json").unlink()
    train_base(tiny_fit_run / "run", plain, preset=preset, model_config=replace(preset.base, mean_planes=False),
               train_config=replace(preset.train_base, steps=2), show_progress=False, log=lambda m: None)
    weights = (plain / "base" / "model.safetensors").read_bytes()
    code, err = run("train", "text-head", "--out", str(plain), "--triplanes", str(tiny_fit_run / "run"))
    assert code == 2 and "mean-planes" in err and "Traceback" not in err
    assert (plain / "base" / "model.safetensors").read_bytes() == weights
