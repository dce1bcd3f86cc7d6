"""Stage 5: the dual encoder, the latent prior, text-to-avatar and edits, on tiny real parts."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from rodin.config import get_preset
from rodin.errors import DataError
from rodin.pipeline import Avatar, RodinPipeline
from rodin.semantic.edit import EditDirections, edit_texts
from rodin.semantic.loading import load_semantic
from rodin.semantic.space import SemanticEncoder


def _log(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_encoder_learns_and_is_a_semantic_encoder(tiny_semantic_model, tiny_fit_run):
    rows = _log(tiny_semantic_model / "encoder_log.csv")
    assert float(rows[-1]["contrastive"]) < 0.8 * float(rows[0]["contrastive"])
    encoder = load_semantic(tiny_semantic_model / "semantic")
    assert isinstance(encoder, SemanticEncoder)
    texts = encoder.encode_texts(["a person with red hair", "a man in a blue suit"])
    assert texts.shape == (2, encoder.dim)
    assert torch.allclose(texts.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(texts[0], texts[1])
    pixels = torch.rand(3, 3, encoder.image_size, encoder.image_size)
    images = encoder.encode_images(pixels)
    assert torch.allclose(images.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(images, encoder.encode_images(pixels))


def test_training_the_encoder_again_is_refused_with_other_settings(tiny_semantic_model, tiny_fit_run):
    from dataclasses import replace

    from rodin.errors import ConfigError
    from rodin.train.encoder import train_encoder

    preset = get_preset("tiny")
    same = train_encoder(tiny_fit_run / "data", tiny_semantic_model, config=preset.encoder,
                         train=preset.train_encoder, log=lambda m: None, show_progress=False)
    assert "steps" in same
    with pytest.raises(ConfigError, match="other settings"):
        train_encoder(tiny_fit_run / "data", tiny_semantic_model, config=preset.encoder,
                      train=replace(preset.train_encoder, steps=3), log=lambda m: None, show_progress=False)


def test_prior_draws_z_on_the_sphere_and_follows_text(tiny_semantic_model):
    pipe = RodinPipeline.from_pretrained(tiny_semantic_model)
    dim = pipe.semantic.dim
    rows = _log(tiny_semantic_model / "prior_log.csv")
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    text = pipe.semantic.encode_texts(["a person with blue hair"])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    drawn = pipe.prior.sample(text, generator=g())
    assert drawn.shape == (1, dim)
    assert torch.allclose(drawn.norm(dim=-1), torch.full((1,), dim ** 0.5), atol=1e-4)
    assert torch.equal(drawn, pipe.prior.sample(text, generator=g()))
    assert not torch.equal(drawn, pipe.prior.sample(None, generator=g()))


def test_pipeline_generates_from_prompt_seed_and_portrait(tiny_semantic_model, tiny_fit_run):
    pipe = RodinPipeline.from_pretrained(tiny_semantic_model)
    u = pipe.base.config.unet
    portrait = next((tiny_fit_run / "data").glob("subject_*/portrait.png"))
    from_text = pipe(prompt="a person with long blonde hair", seed=1, steps=3)
    assert from_text.planes.shape == (3, u.channels, u.resolution, u.resolution)
    assert torch.equal(from_text.planes, pipe(prompt="a person with long blonde hair", seed=1, steps=3).planes)
    assert not torch.equal(from_text.planes, pipe(prompt="a bald man with a beard", seed=1, steps=3).planes)
    for avatar in (from_text, pipe(seed=4, steps=3), pipe(image=portrait, seed=2, steps=3)):
        assert torch.isfinite(avatar.planes).all()
        assert avatar.latent is not None and avatar.latent.shape == (pipe.semantic.dim,)


def test_edit_moves_z_along_the_text_direction_and_keeps_the_noise(tiny_semantic_model, tmp_path):
    pipe = RodinPipeline.from_pretrained(tiny_semantic_model)
    pipe._edits = EditDirections(pipe.semantic, min_similarity=-1.0)   # a tiny encoder: accept any direction
    avatar = pipe(seed=3, steps=3)
    edited = pipe.edit(avatar, edit="with red hair", strength=1.0, steps=3)
    direction = pipe._edits.direction("with red hair")
    before = torch.nn.functional.normalize(avatar.latent, dim=0)
    after = torch.nn.functional.normalize(edited.latent, dim=0)
    assert float(after @ direction) > float(before @ direction)           # moved toward the edit
    assert not torch.equal(edited.planes, avatar.planes)
    none = pipe.edit(avatar, edit="with red hair", strength=0.0, steps=3)
    assert torch.allclose(none.planes, avatar.planes, atol=1e-5)            # strength 0: the same avatar
    loaded = Avatar.load(avatar.save(tmp_path / "a.safetensors"))
    assert torch.equal(loaded.latent, avatar.latent)
    assert torch.equal(pipe.edit(loaded, edit="with red hair", steps=3).planes, edited.planes)


class _RotatingPrior:
    """A stand-in latent prior that sends text embeddings through a fixed rotation, plus its noise: the
    image side of the space is not the text side, as with a real contrastive encoder."""

    def __init__(self, dim: int) -> None:
        self.rotation = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(5)))[0]

    def sample(self, text, *, generator=None, **_):
        noise = torch.randn(text.shape, generator=generator)
        return (text @ self.rotation + 0.01 * noise) * text.shape[1] ** 0.5


def test_edit_directions_through_the_prior_follow_the_image_side(tiny_semantic_model):
    encoder = load_semantic(tiny_semantic_model / "semantic")
    prior = _RotatingPrior(encoder.dim)
    edits = EditDirections(encoder, prior=prior, min_similarity=-1.0)
    plain = EditDirections(encoder, min_similarity=-1.0).direction("with red hair")
    mapped = edits.direction("with red hair")
    texts = encoder.encode_texts(["a person", "a person with red hair"]).cpu()
    expected = torch.nn.functional.normalize(texts[1] @ prior.rotation - texts[0] @ prior.rotation, dim=0)
    assert float(mapped.norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(mapped @ expected) > 0.99                   # the rotated difference, the paired noise cancelled
    assert float(mapped @ plain) < 0.9                       # not the raw text difference
    assert edits.direction("with red hair") is mapped        # one prior run per edit text
    with pytest.raises(DataError, match="names nothing"):    # still refused before the prior runs
        EditDirections(encoder, prior=prior, min_similarity=1.01).direction("with red hair")


def test_edits_that_name_nothing_are_refused(tiny_semantic_model):
    encoder = load_semantic(tiny_semantic_model / "semantic")
    strict = EditDirections(encoder, min_similarity=1.01)   # nothing is close enough
    with pytest.raises(DataError, match="names nothing"):
        strict.direction("with red hair")
    with pytest.raises(DataError, match="empty"):
        EditDirections(encoder, min_similarity=-1.0).direction("   ")
    assert edit_texts("with red hair") == ("a person", "a person with red hair")
    assert edit_texts("A man with a beard") == ("a person", "A man with a beard")


def test_prompt_refusals(tiny_semantic_model):
    pipe = RodinPipeline.from_pretrained(tiny_semantic_model)
    for bad, match in (("", "empty"), ("   \n ", "empty"), ("x" * 5000, "characters")):
        with pytest.raises(DataError, match=match):
            pipe(prompt=bad, seed=0, steps=2)
    assert torch.isfinite(pipe(prompt="un avatar aux cheveux roux, 眼镜", seed=0, steps=2).planes).all()


def test_cli_generate_prompt_and_edit(tiny_semantic_model, tmp_path, capsys):
    from rodin.cli.main import main

    def run(*args):
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        captured = capsys.readouterr()
        return exit_info.value.code or 0, captured.err

    out = tmp_path / "gen"
    tiny = ["--model", str(tiny_semantic_model), "--steps", "2", "--frames", "2", "--resolution", "16", "--no-mesh"]
    code, err = run("generate", "--prompt", "a person in a red hoodie", "--out", str(out), *tiny)
    assert code == 0, err
    assert {"avatar.safetensors", "turntable.mp4", "views.png"} <= {p.name for p in out.iterdir()}
    assert Avatar.load(out / "avatar.safetensors").info["prompt"] == "a person in a red hoodie"
    edited = tmp_path / "edit"
    code, err = run("edit", str(out / "avatar.safetensors"), "--edit", " ", "--model", str(tiny_semantic_model),
                    "--out", str(edited))
    assert code == 2 and err.startswith("error: ") and "empty" in err and err.count("\n") == 1
    assert not edited.exists()
    code, err = run("generate", "--prompt", "", "--out", str(tmp_path / "empty"), *tiny)
    assert code == 2 and "empty" in err and not (tmp_path / "empty").exists()


def test_bench_generate_reports_latency_and_memory(tiny_semantic_model):
    from rodin.bench.generate import run

    result = run(quick=True, model=tiny_semantic_model, repeats=1)
    figures = result.figures
    assert figures["latency_s"] > 0 and figures["peak_rss_mb"] > 0
    assert figures["latency_s"] >= figures["sample_s"]


def test_eval_semantic_runs_end_to_end_with_a_tiny_judge(tiny_semantic_model, tiny_fit_run, tmp_path):
    from rodin.eval.semantic import evaluate_semantic
    from rodin.semantic.judge import JudgeConfig, load_judge, train_judge

    train_judge(tiny_fit_run / "data", tmp_path / "judge", steps=5, batch=8,
                config=JudgeConfig(image_size=32, width=8, multipliers=(1, 2)), log=lambda m: None)
    pipe = RodinPipeline.from_pretrained(tiny_semantic_model)
    figures = evaluate_semantic(pipe, load_judge(tmp_path / "judge"), tiny_fit_run / "data", subjects=2, prompts=3,
                                edits=2, batch=2, include_training=True, log=lambda m: None)
    for key in ("portrait_attr_acc", "text_attr_acc", "edit_success", "edit_preservation", "judge_gt_acc"):
        assert 0.0 <= figures[key] <= 1.0
    for key in ("portrait_attr_acc_shown", "text_attr_acc_shown", "edit_success_shown", "edit_preservation_shown",
                "judge_gt_acc_shown"):      # NaN where these few cases show nothing of the kind
        assert math.isnan(figures[key]) or 0.0 <= figures[key] <= 1.0
    assert figures["text_cases"] == 3 and figures["edit_cases"] == 2
    assert figures["guidance_scale"] == pipe.base.config.diffusion.guidance_scale
    assert figures["cases_from"] == "all subjects"


def test_hair_under_a_hat_is_not_judged_where_the_avatar_does_not_show_it():
    from rodin.eval.semantic import _shown

    capped = {"hat": "cap", "hair_style": "short", "beard": "none", "glasses": "round"}
    assert not _shown(capped, "hair_style") and not _shown(capped, "hair_colour")
    assert _shown(capped, "glasses") and _shown(capped, "hat")
    assert _shown({**capped, "beard": "full"}, "hair_colour")              # a beard shows the colour
    assert not _shown({**capped, "beard": "full"}, "hair_style")
    assert _shown({**capped, "hair_style": "long"}, "hair_style")          # long hair hangs below the rim
    assert _shown({**capped, "hair_style": "long"}, "hair_colour")
    assert _shown({**capped, "hat": "none"}, "hair_style") and _shown({**capped, "hat": "none"}, "hair_colour")
    assert not _shown({"hair_style": "bald", "beard": "none", "hat": "none"}, "hair_colour")
    assert _shown({"hair_colour": "red"}, "hair_colour")                     # a prompt naming only the colour


def test_eval_semantic_samples_at_the_guidance_it_is_given(tiny_semantic_model):
    from rodin.eval.semantic import sample_batch

    pipe = RodinPipeline.from_pretrained(tiny_semantic_model)
    z = torch.randn(2, pipe.base.latent_dim)
    default = sample_batch(pipe, z, [0, 1], steps=2)
    same = sample_batch(pipe, z, [0, 1], steps=2, guidance_scale=pipe.base.config.diffusion.guidance_scale)
    stronger = sample_batch(pipe, z, [0, 1], steps=2, guidance_scale=6.0)
    assert torch.equal(default, same)
    assert not torch.allclose(default, stronger)


def test_paraphrased_prompts_use_phrases_no_caption_uses():
    import random

    from rodin.data.avatar import caption, sample_attributes
    from rodin.eval.semantic import _OTHER_CLAUSES, _STYLE_CLAUSES, paraphrase

    captions = [caption(sample_attributes(s), random.Random(k)) for s in range(300) for k in range(3)]
    clauses = [c for options in (*_STYLE_CLAUSES.values(), *_OTHER_CLAUSES.values()) for c in options]
    assert not [c for c in clauses if any(c in text for text in captions)]
    prompt = paraphrase({"hair_colour": "blonde", "glasses": "sunglasses", "beard": "full"}, random.Random(0))
    assert prompt.count(", ") + prompt.count(" and ") == 2
