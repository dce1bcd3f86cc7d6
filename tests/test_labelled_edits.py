"""Edits along labelled directions: measured from portraits with and without an attribute, chosen by text."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import pytest
import torch

from rodin.errors import DataError
from rodin.pipeline import RodinPipeline
from rodin.semantic.edit import EditDirections, labelled_edits
from rodin.semantic.space import normalise

DIM = 32
GINGER = torch.eye(DIM)[0]       # where ginger hair lies in the toy image space
GLASSES = torch.eye(DIM)[1]


class _HashedTexts:
    """A stand-in text side: each distinct sentence is a fixed random unit vector."""

    dim = DIM
    image_size = 8

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
            rows.append(torch.randn(DIM, generator=torch.Generator().manual_seed(seed)))
        return normalise(torch.stack(rows))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _portraits(count: int = 300):
    """Unit embeddings of random subjects: ginger hair and glasses each add their own axis."""
    g = torch.Generator().manual_seed(0)
    attributes, embeddings = [], []
    for _ in range(count):
        ginger = bool(torch.rand(1, generator=g) < 0.3)
        glasses = bool(torch.rand(1, generator=g) < 0.5)
        attributes.append({"hair_colour": "ginger" if ginger else "black", "glasses": "round" if glasses else "none"})
        embeddings.append(0.3 * torch.randn(DIM, generator=g) + 0.6 * ginger * GINGER + 0.6 * glasses * GLASSES)
    return normalise(torch.stack(embeddings)), attributes


def test_labelled_directions_point_where_the_attribute_lies():
    embeddings, attributes = _portraits()
    edits = labelled_edits(embeddings, attributes)
    phrases = list(edits.config.phrases)
    ginger = edits.directions[phrases.index("with ginger hair")]
    assert float(normalise(ginger) @ GINGER) > 0.9
    assert float(normalise(edits.directions[phrases.index("wearing round glasses")]) @ GLASSES) > 0.9
    # Unlabelled attributes, values no subject has, and pairs only half labelled are left unmeasured.
    for phrase in ("with a mohawk", "with blue hair", "in a red t-shirt", "wearing square glasses"):
        assert not edits.known[phrases.index(phrase)], phrase
    assert edits.config.subjects == len(attributes) and edits.config.dim == DIM
    with pytest.raises(ValueError, match="attribute sets"):
        labelled_edits(embeddings, attributes[:-1])


def test_an_edit_follows_the_labelled_direction_of_its_phrase():
    embeddings, attributes = _portraits()
    edits = labelled_edits(embeddings, attributes)
    directions = EditDirections(_HashedTexts(), labelled=edits)
    ginger = edits.directions[list(edits.config.phrases).index("with ginger hair")]
    moved = directions.direction("with ginger hair")
    assert float(normalise(moved) @ normalise(ginger)) > 0.99        # its own phrase takes the softmax
    assert float(moved.norm()) == pytest.approx(edits.config.gain * float(ginger.norm()), rel=0.02)
    plain = EditDirections(_HashedTexts()).direction("with ginger hair")
    (phrase, weight), *_ = directions.reading("with ginger hair")      # what a user is told the edit meant
    assert phrase == "with ginger hair" and weight > 0.9
    assert EditDirections(_HashedTexts()).reading("with ginger hair") == []
    assert float(normalise(moved) @ plain) < 0.9                   # not the raw text difference
    # An unmeasured phrase's weight goes along the text direction instead of another attribute's.
    mohawk = directions.direction("with a mohawk")
    text_mohawk = EditDirections(_HashedTexts()).direction("with a mohawk")
    assert float(normalise(mohawk) @ text_mohawk) > 0.99
    # Black-haired subjects edited "with ginger hair" land among the ginger-haired ones.
    black = [k for k, a in enumerate(attributes) if a["hair_colour"] == "black"]
    z = embeddings[black] * DIM ** 0.5
    after = normalise(directions.apply(z, "with ginger hair"))
    assert float((after @ GINGER).mean()) > float((embeddings[black] @ GINGER).mean()) + 0.3


def test_labelled_edits_still_refuse_what_names_nothing():
    embeddings, attributes = _portraits()
    # Random sentences lie about 0.5 from every phrase; a known phrase lies on its own.
    directions = EditDirections(_HashedTexts(), labelled=labelled_edits(embeddings, attributes), min_similarity=0.95)
    assert directions.direction("with ginger hair").norm() > 0
    with pytest.raises(DataError, match="names nothing"):
        directions.direction("qwerty zxcv")
    with pytest.raises(DataError, match="8-d"):
        EditDirections(_HashedTexts(), labelled=labelled_edits(embeddings[:, :8], attributes))


def test_measured_edits_are_loaded_and_dropped_when_the_encoder_changes(tiny_semantic_model, tiny_fit_run,
                                                                        tmp_path):
    from rodin.train.edits import measure_edits

    model = tmp_path / "model"
    shutil.copytree(tiny_semantic_model, model)
    figures = measure_edits(tiny_fit_run / "data", model, min_subjects=1, log=lambda m: None)
    assert figures["measured"] > 0
    assert json.loads((model / "model_index.json").read_text())["components"]["edits"] == "edits"
    pipe = RodinPipeline.from_pretrained(model)
    assert pipe.edits is not None and pipe.edits.config.dim == pipe.semantic.dim
    avatar = pipe(seed=3, steps=2)
    edited = pipe.edit(avatar, edit="with ginger hair", steps=2)
    assert torch.isfinite(edited.planes).all() and not torch.equal(edited.latent, avatar.latent)
    assert pipe._edits.labelled is pipe.edits
    assert pipe.edit_reading("with ginger hair").startswith("'with ginger hair' ")
    # Directions measured with another encoder are ignored, with a warning.
    config = model / "edits" / "config.json"
    raw = json.loads(config.read_text())
    raw["config"]["encoder_digest"] = "0" * 64
    config.write_text(json.dumps(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stale = RodinPipeline.from_pretrained(model)
    assert stale.edits is None
    assert any("another semantic encoder" in str(w.message) for w in caught)
    # Data no phrase can be measured on writes nothing.
    fresh = tmp_path / "fresh"
    shutil.copytree(tiny_semantic_model, fresh)
    assert measure_edits(tiny_fit_run / "data", fresh, min_subjects=10_000, log=lambda m: None)["measured"] == 0
    assert not (fresh / "edits").exists()
    # Data without labels: an error for `rodin train edits`, a logged skip after training an encoder.
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(tiny_fit_run / "data", unlabelled)
    for labels in unlabelled.glob("subject_*/attributes.json"):
        labels.unlink()
    with pytest.raises(DataError, match="attributes.json"):
        measure_edits(unlabelled, fresh, log=lambda m: None)
    said = []
    assert measure_edits(unlabelled, fresh, strict=False, log=said.append)["measured"] == 0
    assert any("not measured" in line for line in said) and not (fresh / "edits").exists()


def test_edits_are_routed_in_a_named_space_only():
    from rodin.errors import ConfigError
    from rodin.semantic.edit import LabelledEditsConfig

    assert LabelledEditsConfig().routing == "sentence"
    assert LabelledEditsConfig(routing="encoder").sharpness == LabelledEditsConfig().temperature
    with pytest.raises(ConfigError, match="routing 'clip'"):
        LabelledEditsConfig(routing="clip")
