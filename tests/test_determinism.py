"""Determinism on the CPU: the same model and seed give the same avatar, bit for bit, within one process and
across two, from a seed and from a portrait (random latents from the prior aside: the tiny model has none)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rodin.config import DecoderConfig, get_preset
from rodin.pipeline import RodinPipeline, write_model_index

DRAW = """
import sys
import torch
from safetensors.torch import save_file
from rodin.pipeline import RodinPipeline

pipe = RodinPipeline.from_pretrained(sys.argv[1])
save_file({"planes": pipe(seed=7, steps=4).planes.contiguous()}, sys.argv[2])
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny model folder with random (not zero-initialised) weights: no training needed to be non-trivial."""
    from rodin.diffusion.base import KIND as BASE_KIND
    from rodin.diffusion.base import BaseDiffusion
    from rodin.fit.run import DECODER_KIND
    from rodin.modeling import save_component
    from rodin.triplane.decoder import TriplaneDecoder

    preset = get_preset("tiny")
    folder = tmp_path_factory.mktemp("determinism") / "model"
    torch.manual_seed(0)
    base = BaseDiffusion(preset.base)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    base.set_stats(torch.randn(preset.base.unet.channels), torch.rand(preset.base.unet.channels) + 0.5)
    save_component(base, folder / "base", kind=BASE_KIND)
    save_component(TriplaneDecoder(DecoderConfig(features=preset.base.unet.channels, hidden=16)), folder / "decoder",
                   kind=DECODER_KIND)
    write_model_index(folder, render=preset.render, preset="tiny", components={"base": "base", "decoder": "decoder"})
    return folder


def test_same_seed_same_avatar_bit_for_bit_in_one_process(model):
    pipe = RodinPipeline.from_pretrained(model)
    first = pipe(seed=7, steps=4)
    torch.rand(100)                                   # global RNG use between calls changes nothing
    second = RodinPipeline.from_pretrained(model)(seed=7, steps=4)
    assert torch.equal(first.planes, second.planes)
    assert first.planes.std() > 0                     # a real sample, not a constant
    assert not torch.equal(first.planes, pipe(seed=8, steps=4).planes)
    assert np.array_equal(first.views(count=2, resolution=16), second.views(count=2, resolution=16))
    dpm = pipe(seed=7, steps=4, sampler="dpm")
    assert torch.equal(dpm.planes, pipe(seed=7, steps=4, sampler="dpm").planes)


def test_same_seed_same_avatar_bit_for_bit_across_processes(model, tmp_path):
    here = RodinPipeline.from_pretrained(model)(seed=7, steps=4).planes
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}   # same reduction order as here
    out = tmp_path / "planes.safetensors"
    done = subprocess.run([sys.executable, "-c", DRAW, str(model), str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.equal(load_file(str(out))["planes"], here)


def test_same_portrait_same_avatar(model):
    pipe = RodinPipeline.from_pretrained(model)
    portrait = (np.arange(32 * 32 * 4).reshape(32, 32, 4) % 251).astype(np.uint8)
    # The tiny model has no image encoder; a fitted pixel-PCA one (as `rodin train base` makes) is attached.
    from rodin.semantic.pixel_encoder import PixelEncoder, PixelEncoderConfig

    encoder = PixelEncoder(PixelEncoderConfig(dim=pipe.base.latent_dim))
    g = torch.Generator().manual_seed(1)
    encoder.fit(torch.rand(8, 3, encoder.config.image_size, encoder.config.image_size, generator=g))
    pipe.encoder = encoder
    a = pipe(image=portrait, seed=3, steps=3).planes
    b = pipe(image=portrait, seed=3, steps=3).planes
    assert torch.equal(a, b) and a.std() > 0
