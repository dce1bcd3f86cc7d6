"""Decoder-aware channel weights for the base model's loss (rodin.train.channel_weights)."""

import json
from dataclasses import replace

import pytest
import torch

from rodin.config import DecoderConfig, get_preset
from rodin.errors import ConfigError
from rodin.train.channel_weights import decoder_channel_weights
from rodin.triplane.decoder import TriplaneDecoder

C = 4


def _decoder_blind_to(channel: int) -> TriplaneDecoder:
    torch.manual_seed(0)
    decoder = TriplaneDecoder(DecoderConfig(features=C, hidden=16, layers=1, fourier_octaves=2, density_bias=0.5))
    octaves = decoder.config.fourier_octaves
    first = decoder.trunk[0].weight
    with torch.no_grad():          # the embedding is [f, sin(f w) per (channel, octave), cos(...)]
        first[:, channel] = 0
        for j in range(octaves):
            first[:, C + channel * octaves + j] = 0
            first[:, C + C * octaves + channel * octaves + j] = 0
    return decoder


def _planes() -> torch.Tensor:
    return 0.3 * torch.randn(3, 3, C, 8, 8, generator=torch.Generator().manual_seed(1))


def test_a_channel_the_decoder_never_reads_weighs_nothing():
    weights = decoder_channel_weights(_planes(), _decoder_blind_to(2), torch.ones(C), points=512,
                                      generator=torch.Generator().manual_seed(0))
    assert weights.shape == (C,)
    assert weights.mean().item() == pytest.approx(1.0)
    assert weights[2].item() == 0.0
    assert (weights[[0, 1, 3]] > 0.1).all()


def test_a_normalised_unit_of_a_wider_channel_counts_more():
    decoder, planes = _decoder_blind_to(2), _planes()
    kw = dict(points=512)
    same = decoder_channel_weights(planes, decoder, torch.ones(C), generator=torch.Generator().manual_seed(0), **kw)
    std = torch.tensor([1.0, 2.0, 1.0, 1.0])
    wider = decoder_channel_weights(planes, decoder, std, generator=torch.Generator().manual_seed(0), **kw)
    # Same points, same gradients: channel 1's share grows fourfold against channel 0's.
    assert (wider[1] / wider[0]).item() == pytest.approx(4 * (same[1] / same[0]).item(), rel=1e-4)


def test_train_base_weighs_channels_by_the_decoder_when_asked(tiny_fit_run, tmp_path):
    from rodin.train.base import train_base

    preset = get_preset("tiny")
    tcfg = replace(preset.train_base, steps=2, batch=4, checkpoint_every=2, sample_every=0, log_every=1)
    quiet = dict(preset=preset, train_config=tcfg, show_progress=False, log=lambda m: None)
    weighted = replace(preset.base, channel_weighting="decoder")
    figures = train_base(tiny_fit_run / "run", tmp_path / "weighted", model_config=weighted, **quiet)
    weights = torch.tensor(figures["channel_weights"])
    assert weights.shape == (preset.triplane.channels,)
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-3)
    assert weights.min() >= 0 and weights.std() > 0
    info = json.loads((tmp_path / "weighted" / "train_base.json").read_text())
    assert info["model"]["channel_weighting"] == "decoder"
    with pytest.raises(ConfigError, match="channel_weighting"):
        train_base(tiny_fit_run / "run", tmp_path / "typo", model_config=replace(weighted, channel_weighting="render"),
                   **quiet)
