"""The shipped default model loads with every stage and runs them end to end (a few steps, small renders).

Guards the committed folder against drift in the code that reads it: a config key renamed, a preset
changed under a component, a refiner that no longer matches the decoder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rodin.paths import default_model


@pytest.fixture(scope="module")
def pipe():
    from rodin.pipeline import RodinPipeline

    return RodinPipeline.from_pretrained(default_model())


def test_the_default_model_is_the_text_model_and_names_every_stage():
    assert default_model() == default_model(text=True)
    components = json.loads((default_model() / "model_index.json").read_text())["components"]
    assert {"base", "decoder", "semantic", "prior", "reader", "upsampler", "refiner", "edits"} <= set(components)
    assert (default_model() / "judge" / "model.safetensors").is_file()     # `rodin eval` finds its referee


def test_the_shipped_reader_reads_a_prompt_clause_by_clause_and_draws_from_its_bank(pipe):
    assert pipe.reader is not None and pipe.reader.config.bank == 880
    named = pipe.reader.read("someone with curly red hair, round glasses and a blue hoodie").named()
    assert {k: v for k, (v, _) in named.items() if k != "clothing"} == {
        "hair_style": "curly", "hair_colour": "ginger", "glasses": "round", "clothing_colour": "blue"}
    # Every drawn portrait has what the prompt names, whatever the seed.
    names = list(pipe.reader.table)
    weights = pipe.reader.bank_log_weights(["a person with round glasses and a beanie"])[0]
    top = weights.topk(4).indices
    for name, value in (("glasses", "round"), ("hat", "beanie")):
        assert (pipe.reader.bank_codes[top, names.index(name)] == pipe.reader.table[name].index(value)).all()
    assert "glasses round" in pipe.prompt_reading("a person with round glasses and a beanie")


def test_the_shipped_reader_steers_prompts_toward_what_they_name(pipe):
    import torch

    reader = pipe.reader
    side = pipe.base.config.unet.resolution
    assert reader.config.plane_shape == (3, pipe.base.config.unet.channels, side, side) and reader.config.steer > 0
    with_value, without = pipe.base.normalise(torch.stack(reader.value_means("hair_colour", "green")))
    d = with_value - without
    z = pipe.encode_prompt("a person with green hair", seed=0)
    mean = pipe.prompt_mean("a person with green hair", latent=z)[0]
    assert float(((mean - without) * d).sum() / (d * d).sum()) >= reader.config.steer - 1e-3


def test_a_prompt_runs_through_every_stage_and_renders_refined_views(pipe):
    assert pipe.upsampler is not None and pipe.refiner is not None
    avatar = pipe(prompt="a person with short black hair in a red t-shirt", seed=0, steps=2)
    side = pipe.upsampler.config.unet.resolution
    assert tuple(avatar.planes.shape[-2:]) == (side, side)            # the upsampler's side, not the base's
    refined = avatar.views(count=2, resolution=32)
    plain = avatar.views(count=2, resolution=32, refine=False)
    assert refined.shape == plain.shape == (2, 32, 32, 3) and refined.dtype == np.uint8
    # Both show the same avatar on white: close on average, and not the same pixels (the refiner ran).
    diff = np.abs(refined.astype(float) - plain.astype(float))
    assert 0 < diff.mean() < 40
    assert (refined < 200).any(), "the refined views are blank"


def test_shipped_edits_follow_their_labelled_phrase_even_when_paraphrased(pipe):
    import torch

    assert pipe.edits is not None, "models/small-1k/edits was measured with another encoder"
    phrases = list(pipe.edits.config.phrases)
    blue = pipe.edits.directions[phrases.index("with blue hair")]
    cosine = torch.nn.functional.cosine_similarity
    from rodin.semantic.edit import EditDirections

    edits = EditDirections(pipe.semantic, labelled=pipe.edits)
    assert float(cosine(edits.direction("with blue hair"), blue, dim=0)) > 0.95
    assert float(cosine(edits.direction("with bright blue hair"), blue, dim=0)) > 0.8
    sunglasses = pipe.edits.directions[phrases.index("wearing sunglasses")]
    assert float(cosine(edits.direction("with blue hair"), sunglasses, dim=0)) < 0.5


def test_shipped_edits_route_clothing_colours_to_clothing_and_hair_colours_to_hair(pipe):
    """The encoder's text tower hardly tells "a green top" from "green hair"; phrases are picked in the
    sentence backbone's space, which does."""
    import dataclasses

    import torch

    from rodin.semantic.edit import EditDirections, LabelledEdits

    phrases = list(pipe.edits.config.phrases)
    routed = EditDirections(pipe.semantic, labelled=pipe.edits)
    cosine = torch.nn.functional.cosine_similarity
    planes = pipe.edits.plane_directions.float()
    routes = [("in a green top", "dressed in green clothing"), ("in a black top", "dressed in black clothing"),
              ("whose hair is blue", "with blue hair"), ("wearing a red garment", "dressed in red clothing")]
    for edit, phrase in routes:
        change = routed.plane_direction(edit)
        similarity = cosine(change.flatten(), planes[phrases.index(phrase)].flatten(), dim=0)
        assert float(similarity) > 0.9, (edit, phrase, float(similarity))
    # The encoder's own space sends the green top to the hair (the old routing, kept as an option).
    by_encoder = LabelledEdits(dataclasses.replace(pipe.edits.config, routing="encoder"))
    by_encoder.load_state_dict(pipe.edits.state_dict())
    change = EditDirections(pipe.semantic, labelled=by_encoder).plane_direction("in a green top")
    assert float(cosine(change.flatten(), planes[phrases.index("with green hair")].flatten(), dim=0)) > 0.5


def test_an_edit_keeps_an_avatar_at_the_base_resolution_when_it_was_drawn_there(pipe):
    avatar = pipe(prompt="a person with short black hair", seed=0, steps=2, upsample=False)
    side = pipe.base.config.unet.resolution
    assert avatar.planes.shape[-1] == side and not avatar.info["upsampled"]
    edited = pipe.edit(avatar, edit="in a green top", steps=2)
    assert edited.planes.shape[-1] == side and not edited.info["upsampled"]
    assert not edited.planes.equal(avatar.planes)
