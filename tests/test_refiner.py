"""Stage 4 on the tiny preset: the refiner's shapes, its training pairs, learning, saving and resume.

The fit run is faked: random smooth planes, a random decoder with two extra feature channels (so the
refiner reads RGB + features), and a tiny synthetic dataset whose views are the ground truth.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rodin.config import RefinerConfig, get_preset
from rodin.data.synth import synth_dataset
from rodin.errors import ConfigError
from rodin.fit.run import DECODER_KIND, list_sources
from rodin.fit.store import TriplaneStore
from rodin.modeling import load_component, save_component
from rodin.refine.network import KIND, Refiner
from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.triplane import resize_planes

TINY = get_preset("tiny")
QUIET = dict(log=lambda m: None, show_progress=False)
EXTRA = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """3 subjects (2 to train on, 1 held out) with 3 views of 32 px: renders of 16 px for a 2x refiner."""
    root = tmp_path_factory.mktemp("refiner")
    synth_dataset(root / "data", subjects=3, views=3, resolution=32, portrait_resolution=16, progress=False)
    sources = list_sources(root / "data")
    t = TINY.triplane
    store = TriplaneStore.create(root / "run" / "triplanes", [s.id for s in sources], ["train", "train", "test"],
                                 (3, t.channels, t.resolution, t.resolution))
    g = torch.Generator().manual_seed(0)
    store.put([0, 1, 2], resize_planes(torch.randn(3, 3, t.channels, 8, 8, generator=g), t.resolution))
    torch.manual_seed(0)
    decoder = TriplaneDecoder(replace(TINY.decoder, extra_features=EXTRA, density_bias=1.0))
    save_component(decoder, root / "run" / "decoder", kind=DECODER_KIND)
    (root / "run" / "fit_config.json").write_text(json.dumps({"data": str(root / "data")}))
    return root / "run"


def test_shapes_and_start_as_bicubic():
    model = Refiner(RefinerConfig(in_channels=3 + EXTRA, scale=4, width=8, blocks=1))
    render = torch.rand(2, 3 + EXTRA, 8, 8)
    out = model(render)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    bicubic = F.interpolate(render[:, :3], scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(out, bicubic)                      # untrained: exactly the enlargement
    assert model.refine(render).min() >= 0 and model.refine(render).max() <= 1
    with pytest.raises(ValueError, match=r"\(B, 5, H, W\)"):
        model(torch.rand(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="power of 2"):
        Refiner(RefinerConfig(scale=3))


def test_loss_goes_down_and_beats_bicubic_on_a_fixed_batch():
    from rodin.train.refiner import psnr, refiner_loss

    torch.manual_seed(0)
    model = Refiner(RefinerConfig(in_channels=3 + EXTRA, scale=2, width=16, blocks=2))
    g = torch.Generator().manual_seed(1)
    targets = resize_planes(torch.rand(4, 1, 3, 8, 8, generator=g), 32, mode="bicubic")[:, 0].clamp(0, 1)
    targets = (targets + 0.1 * torch.sign(torch.randn(4, 3, 32, 32, generator=g))).clamp(0, 1)  # fine detail
    features = torch.cat([F.interpolate(targets, size=16, mode="area"), torch.rand(4, EXTRA, 16, 16, generator=g)],
                         dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = refiner_loss(model(features), targets, ssim_weight=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(v == v for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses[::10]
    with torch.no_grad():
        assert psnr(model.refine(features), targets) > psnr(model.enlarge(features), targets) + 0.5


def test_pairs_are_renders_with_features_and_larger_views(run):
    from rodin.refine.pairs import build_pairs
    from rodin.triplane.decoder import TriplaneDecoder as Decoder

    store = TriplaneStore.open(run / "triplanes")
    decoder = load_component(Decoder, type(TINY.decoder), run / "decoder", kind=DECODER_KIND)
    pairs = build_pairs(store, [0, 1], decoder, run.parent / "data", render=TINY.render, scale=2, views=2,
                        options={})
    assert pairs.inputs.shape == (4, 3 + EXTRA, 16, 16) and pairs.targets.shape == (4, 3, 32, 32)
    assert torch.isfinite(pairs.inputs).all() and 0 <= pairs.targets.min() and pairs.targets.max() <= 1
    assert pairs.inputs[:, 3:].abs().max() > 0                  # the feature channels were rendered
    assert (pairs.inputs[0] - pairs.inputs[2]).abs().max() > 1e-3   # two subjects, two different renders
    assert pairs.subjects == [store.ids[0]] * 2 + [store.ids[1]] * 2


def train(run, out, **overrides):
    from rodin.train.refiner import train_refiner

    tcfg = replace(TINY.train_refiner, steps=6, batch=2, warmup=1, checkpoint_every=2, log_every=1, views=2,
                   **overrides)
    return train_refiner(run, out, preset=TINY, train_config=tcfg, cpu=True, **QUIET)


def test_train_save_load_and_resume(run, tmp_path, monkeypatch):
    import rodin.train.refiner as stage

    figures = train(run, tmp_path / "whole")
    assert figures["figures_on"] == "heldout" and figures["pairs"] == 4
    assert {"psnr", "bicubic_psnr", "psnr_gain_db"} <= set(figures)
    model = load_component(Refiner, RefinerConfig, tmp_path / "whole" / "refiner", kind=KIND)
    assert model.config.in_channels == 3 + EXTRA and model.config.scale == TINY.refiner.scale
    assert model(torch.rand(1, 3 + EXTRA, 16, 16)).shape == (1, 3, 32, 32)
    assert train(run, tmp_path / "whole") == figures          # finished: nothing to redo

    real = stage.draw_crops

    def dies_at_step_5(*args, step, **kwargs):
        if step == 5:
            raise KeyboardInterrupt
        return real(*args, step=step, **kwargs)

    monkeypatch.setattr(stage, "draw_crops", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(run, tmp_path / "cut")
    assert json.loads((tmp_path / "cut" / ".refiner_state" / "checkpoint" / "state.json").read_text())["step"] == 4
    monkeypatch.setattr(stage, "draw_crops", real)
    train(run, tmp_path / "cut")
    whole = load_file(str(tmp_path / "whole" / "refiner" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "refiner" / "model.safetensors"))
    assert max((whole[k] - resumed[k]).abs().max().item() for k in whole) < 1e-6
    train(run, tmp_path / "seed1", seed=1)                               # control: the comparison can fail
    reseeded = load_file(str(tmp_path / "seed1" / "refiner" / "model.safetensors"))
    assert max((whole[k] - reseeded[k]).abs().max().item() for k in whole) > 1e-5
    with pytest.raises(ConfigError, match="other settings"):
        train(run, tmp_path / "whole", lr=5e-3)


def test_cli_trains_and_reports_json(run, tmp_path, capsys):
    from rodin.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["train", "refiner", "--triplanes", str(run), "--out", str(tmp_path / "m"), "--preset", "tiny",
              "--steps", "2", "--batch", "2", "--cpu"])
    assert info.value.code == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["steps"] == 2 and (tmp_path / "m" / "refiner" / "model.safetensors").is_file()
