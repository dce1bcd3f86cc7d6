"""Edits in the planes: each phrase's mean change of the fitted tri-planes, added where the base model starts."""

import shutil
from dataclasses import replace

import pytest
import torch

from rodin.errors import DataError
from rodin.modeling import load_component, save_component
from rodin.pipeline import RodinPipeline
from rodin.semantic.edit import EditDirections, LabelledEdits, LabelledEditsConfig, plane_edits
from rodin.train.edits import KIND, add_plane_edits, measure_edits


def _attributes(k: int) -> dict:
    return {"hair_colour": "ginger" if k % 3 == 0 else "black", "clothing_colour": "blue" if k % 2 else "red",
            "clothing": "hoodie"}


def test_plane_directions_are_the_difference_of_the_means_and_survive_a_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    shape = (3, 2, 4, 4)
    ginger, blue = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    planes = torch.stack([0.01 * torch.randn(shape, generator=g) + (k % 3 == 0) * ginger + (k % 2) * blue
                          for k in range(30)])
    labels = [_attributes(k) for k in range(30)]
    edits = plane_edits(LabelledEdits(LabelledEditsConfig(dim=4)), [(planes[:16], labels[:16]),
                                                                    (planes[16:], labels[16:])])
    phrases = list(edits.config.phrases)
    assert edits.config.plane_shape == shape and edits.config.plane_subjects == 30
    has = torch.tensor([k % 3 == 0 for k in range(30)])
    expected = planes[has].mean(0) - planes[~has].mean(0)
    assert torch.allclose(edits.plane_directions[phrases.index("with ginger hair")], expected, atol=1e-5)
    assert torch.allclose(expected, ginger, atol=0.5)                 # the colour's own change, little else
    assert not edits.plane_directions[phrases.index("with pink hair")].any()      # nobody has it: unmeasured
    # "in a blue hoodie" names two pairs; every subject wears a hoodie, so it cannot be measured.
    assert not edits.plane_directions[phrases.index("in a blue hoodie")].any()
    save_component(edits, tmp_path / "edits", kind=KIND, dtype=torch.float16)
    loaded = load_component(LabelledEdits, LabelledEditsConfig, tmp_path / "edits", kind=KIND)
    assert torch.allclose(loaded.plane_directions, edits.plane_directions, atol=1e-2)
    picked = torch.full((len(phrases),), -1.0)
    picked[phrases.index("with ginger hair")] = 1.0
    assert torch.allclose(loaded.plane_direction(picked), loaded.plane_directions[phrases.index("with ginger hair")],
                          atol=1e-4)
    assert LabelledEdits(LabelledEditsConfig(dim=4)).plane_direction(picked) is None


def test_a_model_edits_its_planes_where_its_edits_carry_plane_directions(tiny_semantic_model, tiny_fit_run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_semantic_model, model)
    data = tiny_fit_run / "data"
    with pytest.raises(DataError, match="no labelled edits"):
        add_plane_edits(model, tiny_fit_run / "run", log=lambda m: None)
    measure_edits(data, model, min_subjects=1, log=lambda m: None)
    figures = add_plane_edits(model, tiny_fit_run / "run", min_subjects=1, log=lambda m: None)
    assert figures["plane_measured"] > 0
    # Measured again with a run that is not one: refused, and the edits on disk are kept whole.
    kept = (model / "edits" / "model.safetensors").read_bytes()
    with pytest.raises(DataError, match="tri-plane store"):
        measure_edits(data, model, min_subjects=1, triplanes=tmp_path / "nowhere", log=lambda m: None)
    assert (model / "edits" / "model.safetensors").read_bytes() == kept
    pipe = RodinPipeline.from_pretrained(model)
    assert pipe.edits.plane_directions is not None
    pipe._edits = EditDirections(pipe.semantic, labelled=pipe.edits, min_similarity=-1.0)   # a tiny encoder
    # The arithmetic of plane edits on the drawn avatars; fitting them to the portrait: test_portrait_fit.py.
    pipe.portrait_fit = replace(pipe.portrait_fit, steps=0)
    portrait = next(data.glob("*/portrait.png"))
    change = pipe.edit_planes("with black hair", strength=2.0)
    assert change.shape == (1, *pipe.base.mean_planes.shape) and change.abs().sum() > 0
    assert torch.allclose(pipe.edit_planes("with black hair", strength=1.0) * 2, change)
    plain = pipe(image=portrait, seed=1, steps=2, upsample=False)
    unmoved = pipe(image=portrait, seed=1, steps=2, upsample=False, edit="with black hair", strength=0.0)
    assert torch.allclose(unmoved.planes, plain.planes, atol=1e-5)
    edited = pipe(image=portrait, seed=1, steps=2, upsample=False, edit="with black hair")
    assert torch.equal(edited.latent, plain.latent)                       # a plane edit leaves z alone
    assert edited.info["edits"] == [["with black hair", 1.0]]
    z = pipe.encode_image(portrait)
    start = pipe.base.mean_planes(z) + pipe.edit_planes("with black hair")
    g = torch.Generator().manual_seed(1)
    assert torch.allclose(edited.planes[None], pipe.base.sample(z, count=1, steps=2, generator=g, mean=start),
                          atol=1e-5)
    assert not torch.allclose(edited.planes, plain.planes, atol=1e-4)
    assert torch.allclose(pipe.edit(plain, edit="with black hair").planes, edited.planes, atol=1e-5)
    # Edits add up: twice at strength 1 is once at strength 2, whichever route.
    twice = pipe.edit(pipe.edit(plain, edit="with black hair"), edit="with black hair")
    strong = pipe(image=portrait, seed=1, steps=2, upsample=False, edit="with black hair", strength=2.0)
    assert torch.allclose(twice.planes, strong.planes, atol=1e-4)
    assert twice.info["edits"] == [["with black hair", 1.0], ["with black hair", 1.0]]
