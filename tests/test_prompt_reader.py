"""Prompts read as attribute values, and z drawn from the bank of portraits that have them."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
import warnings

import pytest
import torch

from rodin.cli.main import main
from rodin.data.avatar import caption, described, sample_attributes
from rodin.errors import ConfigError, DataError
from rodin.eval import semantic as evaluation
from rodin.pipeline import RodinPipeline
from rodin.semantic import prompt_reader
from rodin.semantic.prompt_reader import (
    READ_ATTRIBUTES,
    PromptReader,
    PromptReaderConfig,
    attribute_targets,
    bank_codes,
    describe_reading,
    prompt_clauses,
)
from rodin.train.reader import ReaderTrainConfig, reader_captions, train_reader
from rodin.train.reader_wording import reworded


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^a-z']+", text.lower()) if w}


def test_described_is_the_caption_and_names_what_it_says():
    for seed in range(200):
        attrs = sample_attributes(seed)
        for mentions in (None, 1, 2):
            text, named = described(attrs, random.Random(seed), mentions=mentions)
            assert text == caption(attrs, random.Random(seed), mentions=mentions)
            assert all(getattr(attrs, name) == value for name, value in named.items())
            if mentions is None:      # a whole caption always names the clothes and, unless bald, the hair colour
                assert named["clothing"] == attrs.clothing and named["clothing_colour"] == attrs.clothing_colour
                assert named["hair_style"] == attrs.hair_style
                assert ("hair_colour" in named) == (attrs.hair_style != "bald")
            else:
                assert len(named) <= 2 * mentions
    text, named = described(sample_attributes(7), 3, mentions=1)
    assert named == {} and "eyes" in text      # an eye colour is said, but no attribute a prompt asks for


def test_reworded_prompts_name_their_attributes_in_words_the_evaluation_never_uses():
    """text_attr_acc scores wording never seen in training: the reader's extra wording must not borrow it."""
    evaluation_words: set[str] = set()
    for table in (evaluation._COLOUR_WORDS, evaluation._CLOTH_WORDS, evaluation._STYLE_CLAUSES,
                  evaluation._OTHER_CLAUSES):
        for phrases in table.values():
            for phrase in phrases:
                evaluation_words |= _words(phrase)
    for form in evaluation._SUBJECTS + ["whose hair is", "with hair dyed or grown locks", "dressed in clothes",
                                        "whose top is", "wearing a garment", "with a complexion",
                                        "whose skin tone is"]:
        evaluation_words |= _words(form)
    rng = random.Random(0)
    caption_words = set().union(*(_words(caption(sample_attributes(s), rng)) for s in range(3000)))
    only_evaluation = evaluation_words - caption_words
    assert {"crimson", "complexion", "whose", "locks", "garment"} <= only_evaluation
    rng = random.Random(1)
    for seed in range(3000):
        attrs = sample_attributes(seed)
        text, named = reworded(attrs, rng)
        assert not _words(text) & only_evaluation, text
        assert named and all(getattr(attrs, name) == value for name, value in named.items())


def test_targets_and_codes_follow_the_vocabulary():
    table = PromptReader(PromptReaderConfig()).table
    assert table == READ_ATTRIBUTES
    targets = attribute_targets([{"hair_colour": "blue", "skin": "unheard-of"}, {}], table)
    names = list(table)
    assert targets[0, names.index("hair_colour")] == table["hair_colour"].index("blue")
    assert targets[0, names.index("skin")] == len(table["skin"])           # an unknown value is "not said"
    assert (targets[1] == torch.tensor([len(v) for v in table.values()])).all()
    codes = bank_codes([{"hat": "cap"}, {"hat": "sombrero"}], table)
    assert codes[0, names.index("hat")] == table["hat"].index("cap") and codes[1, names.index("hat")] == -1
    assert (codes[:, names.index("beard")] == -1).all()


def test_config_refuses_what_it_cannot_read():
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        PromptReaderConfig(vocabulary=("hair_colour", "skin=pale"))
    with pytest.raises(ConfigError, match="two values"):
        PromptReaderConfig(vocabulary=("hat=cap", "skin=pale", "skin=dark"))
    with pytest.raises(ConfigError, match="draws"):
        PromptReaderConfig(draws=0)


class _Confident(PromptReader):
    """A reader whose reading is given: per attribute, the named value (or None for not said)."""

    def __init__(self, config, reading: dict[str, str | None]):
        super().__init__(config)
        self.reading = reading

    def probabilities(self, prompts):
        out = []
        for name, values in self.table.items():
            p = torch.full((len(prompts), len(values) + 1), 1e-4)
            wanted = self.reading.get(name)
            p[:, values.index(wanted) if wanted else -1] = 1.0
            out.append(p / p.sum(-1, keepdim=True))
        return out


def test_draws_come_from_the_portraits_that_have_what_the_prompt_names():
    config = PromptReaderConfig(dim=4, bank=40, draws=3)
    attributes = [{"hair_colour": "ginger" if k % 4 == 0 else "black", "hat": "cap" if k % 8 == 0 else "none"}
                  for k in range(40)]
    reader = _Confident(config, {"hair_colour": "ginger"})
    reader.bank_codes.copy_(bank_codes(attributes, reader.table))
    reader.bank_latents.copy_(torch.randn(40, 4, generator=torch.Generator().manual_seed(0)))
    weights = reader.bank_log_weights(["a person with ginger hair"])[0]
    ginger = torch.tensor([a["hair_colour"] == "ginger" for a in attributes])
    assert weights[ginger].min() > weights[~ginger].max() + 5
    assert torch.allclose(weights[ginger], weights[ginger][:1].expand(int(ginger.sum())))   # hats are left open
    z = reader.draw(["x", "x"], generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4) and z.isfinite().all()
    # With one draw, z is a ginger-haired portrait's z exactly.
    one = reader.draw(["x"], generator=torch.Generator().manual_seed(1), draws=1)[0]
    matches = (reader.bank_latents - one).norm(dim=-1) < 1e-5
    assert matches.sum() == 1 and ginger[matches].all()
    # Both named: only the ginger portraits with a cap.
    both = _Confident(config, {"hair_colour": "ginger", "hat": "cap"})
    both.load_state_dict(reader.state_dict())
    weights = both.bank_log_weights(["x"])[0]
    capped = ginger & torch.tensor([a["hat"] == "cap" for a in attributes])
    assert weights[capped].min() > weights[~capped].max() + 5
    # Nothing named: every portrait alike, an unconditional draw.
    assert torch.allclose(_Confident(config, {}).bank_log_weights(["x"]), torch.zeros(1, 40, dtype=torch.float64))


def _rolled(planes: torch.Tensor) -> torch.Tensor:
    """(B, 3, C, H, W) -> (B, C, H, 3W): a base model's normalisation with unit statistics."""
    return torch.cat(planes.unbind(1), dim=-1)


def _steering_reader(reading: dict[str, str | None], *, steer: float = 2.0) -> PromptReader:
    """A reader of `reading` holding value planes of 20 subjects: 8 with ginger hair, whose planes are 1 in
    plane 0 (and 0 elsewhere), 12 with black hair (0 everywhere); 2 with a cap (too few to steer by)."""
    words = PromptReaderConfig().vocabulary
    config = PromptReaderConfig(plane_shape=(3, 2, 4, 4), plane_subjects=20, steer=steer)
    reader = _Confident(config, reading)
    ginger, black, cap = (words.index(w) for w in ("hair_colour=ginger", "hair_colour=black", "hat=cap"))
    reader.value_planes[ginger, 0] = 1.0
    reader.value_counts[ginger], reader.value_counts[black], reader.value_counts[cap] = 8, 12, 2
    reader.planes_mean.copy_(8 / 20 * reader.value_planes[ginger].float())
    return reader


def test_prompts_are_steered_toward_the_values_they_name():
    reader = _steering_reader({"hair_colour": "ginger", "hat": "cap"})
    with_value, without = reader.value_means("hair_colour", "ginger")
    assert torch.allclose(with_value[0], torch.ones(2, 4, 4)) and torch.allclose(without, torch.zeros(3, 2, 4, 4))
    assert reader.value_means("hat", "cap") is None            # 2 subjects: too few to measure
    d = _rolled(with_value[None] - without[None])[0]

    def reached(planes: torch.Tensor) -> float:
        return float((planes * d).sum() / (d * d).sum())

    start = torch.randn(2, 2, 4, 12, generator=torch.Generator().manual_seed(0)) * 0.1
    start[1] += 3.0 * d                                        # already past the target
    readings = [reader.read("x").named()] * 2
    steered = reader.steer(start, readings, _rolled)
    assert reached(steered[0]) == pytest.approx(2.0, abs=1e-5)
    assert torch.equal(steered[1], start[1])
    # Only along d: what d does not touch (planes 1 and 2) is as it was.
    assert torch.equal(steered[0][..., 4:], start[0][..., 4:])
    assert torch.equal(reader.steer(start, readings, _rolled, skip=frozenset({"hair_colour"})), start)
    assert torch.equal(_steering_reader({"hair_colour": "ginger"}, steer=0.0).steer(start, readings, _rolled), start)
    assert torch.equal(PromptReader(PromptReaderConfig()).steer(start, readings, _rolled), start)   # no value planes
    with pytest.raises(ConfigError, match="steer"):
        PromptReaderConfig(steer=-1.0)


def test_an_empty_bank_is_a_clear_error():
    with pytest.raises(DataError, match="empty bank"):
        _Confident(PromptReaderConfig(), {}).draw(["a person"])


def test_prompts_are_read_clause_by_clause():
    assert prompt_clauses("someone with red hair and wearing a cap, smiling") == [
        "someone with red hair", "a person wearing a cap", "a person smiling"]
    assert prompt_clauses("a bald man") == ["a bald man"]
    assert prompt_clauses("a person with red hair in a green hoodie") == [
        "a person with red hair", "a person in a green hoodie"]
    assert prompt_clauses("the one with glasses; an orange hoodie") == ["the one with glasses", "an orange hoodie"]


def test_the_reading_is_told_in_words():
    assert describe_reading({"hair_colour": ("red", 0.981)}) == "hair colour red 0.98"
    assert "nothing" in describe_reading({})


def test_reader_captions_mix_the_generator_and_other_wordings():
    pairs = reader_captions(400, seed=0)
    assert len(pairs) == 400 and pairs == reader_captions(400, seed=0)
    assert any("-haired" in text or "mane" in text or "outfit" in text for text, _ in pairs)
    assert any(text.startswith(("a portrait of", "a 3D avatar of", "a cartoon of")) for text, _ in pairs)
    assert all(named or "eyes" in text or text.endswith(("person", "character", "avatar", "figure"))
               for text, named in reader_captions(400, seed=0, share=0.0))


@pytest.fixture(scope="module")
def model_with_reader(tiny_semantic_model, tmp_path_factory):
    model = tmp_path_factory.mktemp("reader") / "model"
    shutil.copytree(tiny_semantic_model, model)
    return model


def test_a_trained_reader_reads_prompts_and_the_pipeline_draws_from_it(model_with_reader, tiny_fit_run):
    figures = train_reader(tiny_fit_run / "data", model_with_reader,
                           train=ReaderTrainConfig(captions=2048, steps=300, batch=128), log=lambda m: None)
    # Held-out generated prompts: what they name is read (value and all) far above chance.
    assert figures["heldout_named_recall"] > 0.8 and figures["bank"] >= 2
    assert json.loads((model_with_reader / "model_index.json").read_text())["components"]["reader"] == "reader"
    pipe = RodinPipeline.from_pretrained(model_with_reader)
    assert pipe.reader is not None and pipe.prompts_use_text_head
    reading = pipe.reader.read("a person with ginger hair").named()
    assert reading["hair_colour"][0] == "ginger"
    assert "hair colour ginger" in pipe.prompt_reading("a person with ginger hair")
    z = pipe.encode_prompt("a person with ginger hair", seed=5)
    assert torch.equal(z, pipe.encode_prompt("a person with ginger hair", seed=5))
    avatar = pipe(prompt="a person with ginger hair", seed=5, steps=2, upsample=False)
    assert torch.allclose(avatar.latent, z[0]) and avatar.planes.isfinite().all()
    # The avatar starts from the text head's planes and the mean-planes head's planes of the drawn z, half each.
    text = pipe.semantic.encode_texts(["a person with ginger hair"]).cpu()
    with torch.no_grad():
        halves = 0.5 * pipe.base.prompt_mean(text) + 0.5 * pipe.base.mean_planes(z)
    assert torch.allclose(pipe.prompt_mean("a person with ginger hair", latent=z), halves, atol=1e-6)
    with pytest.raises(ValueError, match="pass latent"):
        pipe.prompt_mean("a person with ginger hair")
    edited = pipe.edit(avatar, edit="wearing sunglasses", strength=1.0, steps=2)
    assert edited.info["prompt"] == "a person with ginger hair" and edited.planes.isfinite().all()


def test_value_planes_steer_the_pipeline_prompts(model_with_reader, tiny_fit_run, monkeypatch, capsys):
    if not (model_with_reader / "reader").is_dir():
        train_reader(tiny_fit_run / "data", model_with_reader,
                     train=ReaderTrainConfig(captions=512, steps=5, batch=128), log=lambda m: None)
    steered = model_with_reader.parent / "steered"
    shutil.copytree(model_with_reader, steered)
    before = RodinPipeline.from_pretrained(steered).reader.state_dict()
    with pytest.raises(SystemExit) as exit_:
        main(["train", "steering", "--out", str(steered), "--triplanes", str(tiny_fit_run / "run")])
    assert exit_.value.code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plane_subjects"] >= 2
    pipe = RodinPipeline.from_pretrained(steered)
    reader = pipe.reader
    side = pipe.base.config.unet.resolution
    assert reader.config.plane_shape == (3, pipe.base.config.unet.channels, side, side)
    assert all(torch.equal(v, reader.state_dict()[k]) for k, v in before.items())    # the reader is kept
    assert int(reader.value_counts.sum()) == 9 * reader.config.plane_subjects      # one value per attribute
    # The tiny run has too few subjects to steer by; with the bar lowered, a prompt read as naming a value some
    # of them have moves its planes toward it, and an edit that names the same attribute keeps it as it was.
    monkeypatch.setattr(prompt_reader, "MIN_VALUE_SUBJECTS", 1)
    counts = reader.value_counts.tolist()
    word = next(w for w, n in zip(reader.config.vocabulary, counts) if 0 < n < reader.config.plane_subjects)
    name, value = word.split("=", 1)
    confident = _Confident(reader.config, {name: value})
    monkeypatch.setattr(reader, "probabilities", confident.probabilities)
    prompt = "a person"
    named = reader.read(prompt).named()
    assert named[name][0] == value
    z = pipe.encode_prompt(prompt, seed=5)
    text = pipe.semantic.encode_texts([prompt]).cpu()
    with torch.no_grad():
        halves = 0.5 * pipe.base.prompt_mean(text) + 0.5 * pipe.base.mean_planes(z)
    expected = reader.steer(halves, [named], pipe.base.normalise)
    assert not torch.allclose(expected, halves)
    assert torch.allclose(pipe.prompt_mean(prompt, latent=z), expected, atol=1e-5)
    assert torch.allclose(pipe.prompt_mean(prompt, latent=z, edits=["with another one"]), halves, atol=1e-5)
    avatar = pipe(prompt=prompt, seed=5, steps=2, upsample=False)
    assert avatar.planes.isfinite().all()
    # Value planes measured for a base model of another side are named as such, not broadcast.
    reader.config = dataclasses.replace(reader.config, plane_shape=(3, 1, 2, 2))
    with pytest.raises(DataError, match="rodin train steering"):
        pipe.prompt_mean(prompt, latent=z)


def test_train_steering_command_says_what_is_wrong(tmp_path, tiny_fit_run, capsys):
    for out, run, expected in ((tmp_path / "m", tmp_path / "missing", "missing"),
                               (tmp_path / "m", tiny_fit_run / "run", "no prompt reader")):
        with pytest.raises(SystemExit) as exit_:
            main(["train", "steering", "--out", str(out), "--triplanes", str(run)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_a_reader_read_with_another_encoder_is_set_aside(model_with_reader, tiny_fit_run):
    if not (model_with_reader / "reader").is_dir():
        train_reader(tiny_fit_run / "data", model_with_reader,
                     train=ReaderTrainConfig(captions=512, steps=5, batch=128), log=lambda m: None)
    config = json.loads((model_with_reader / "reader" / "config.json").read_text())
    config["config"]["encoder_digest"] = "0" * 64
    stale = model_with_reader.parent / "stale"
    shutil.copytree(model_with_reader, stale)
    (stale / "reader" / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = RodinPipeline.from_pretrained(stale)
    assert pipe.reader is None and any("another semantic encoder" in str(w.message) for w in caught)


def test_train_reader_command_says_what_is_wrong(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "reader", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no such dataset folder" in err and "Traceback" not in err
