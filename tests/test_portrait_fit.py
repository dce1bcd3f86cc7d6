"""Fitting a drawn avatar to its portrait (rodin.fit.portrait): it moves toward the portrait where the
portrait sees, and stays what it was where it does not."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from rodin.config import DecoderConfig, get_preset
from rodin.errors import ConfigError, DataError
from rodin.fit.portrait import fit_to_portrait, keep_cameras
from rodin.semantic.face import prepare_portrait

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def fitted(tiny_fit_run):
    """The tiny run's decoder, two subjects' fitted planes, and the second subject's portrait."""
    from rodin.fit.run import DECODER_KIND
    from rodin.fit.store import TriplaneStore
    from rodin.modeling import load_component
    from rodin.triplane.decoder import TriplaneDecoder

    decoder = load_component(TriplaneDecoder, DecoderConfig, tiny_fit_run / "run" / "decoder", kind=DECODER_KIND)
    store = TriplaneStore.open(tiny_fit_run / "run" / "triplanes")
    planes = torch.from_numpy(store.planes[[0, 1]]).float()
    portrait = prepare_portrait(tiny_fit_run / "data" / store.ids[1] / "portrait.png", size=32).pixels
    return decoder.eval(), planes, portrait


def _portrait_view(planes, decoder, resolution=32):
    from rodin.data.synth import PORTRAIT_FOV_X, portrait_camera
    from rodin.render.volume import render_views

    rgb, _, _ = render_views(planes, decoder, portrait_camera()[None], PORTRAIT_FOV_X, resolution,
                             samples=TINY.render.samples)
    return rgb[0].permute(2, 0, 1)


def _back_views(planes, decoder):
    from rodin.render.cameras import DEFAULT_FOV_X
    from rodin.render.volume import render_views

    rgb, _, _ = render_views(planes, decoder, keep_cameras(3), DEFAULT_FOV_X, 32, samples=TINY.render.samples)
    return rgb


def _fit(fitted, **changes):
    decoder, planes, portrait = fitted
    config = replace(TINY.portrait_fit, steps=40, **changes)
    return fit_to_portrait(planes[0], decoder, portrait, config=config, render=TINY.render,
                           generator=torch.Generator().manual_seed(0))


def test_one_subjects_planes_move_toward_anothers_portrait_and_keep_their_back(fitted):
    decoder, planes, portrait = fitted
    before = (_portrait_view(planes[0], decoder) - portrait).pow(2).mean()
    after_planes = _fit(fitted)
    after = (_portrait_view(after_planes, decoder) - portrait).pow(2).mean()
    assert after < 0.6 * before, f"the portrait view did not move toward the portrait ({before:.4f} -> {after:.4f})"
    # Where the portrait cannot see, the kept views hold the avatar as drawn; without them it drifts more.
    back = _back_views(planes[0], decoder)
    kept = (_back_views(after_planes, decoder) - back).pow(2).mean()
    loose = (_back_views(_fit(fitted, keep_weight=0.0), decoder) - back).pow(2).mean()
    assert kept < 0.7 * loose, f"views behind the head changed as much with the keep term ({kept:.5f}, {loose:.5f})"
    assert torch.isfinite(after_planes).all() and after_planes.shape == planes[0].shape


def test_the_density_term_keeps_the_shape_where_the_portrait_sees_only_colour(fitted):
    from rodin.triplane.sampling import sample_triplane

    decoder, planes, _ = fitted
    points = torch.rand(4096, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    index = torch.zeros(4096, dtype=torch.long)

    def opacity(tri):
        with torch.no_grad():
            return 1 - torch.exp(-decoder.density(sample_triplane(tri[None], points, index)) / 16)

    was = opacity(planes[0])
    held = (opacity(_fit(fitted)) - was).abs().mean()
    free = (opacity(_fit(fitted, density_weight=0.0)) - was).abs().mean()
    assert held < free


def test_zero_steps_keeps_the_drawn_planes_and_bad_input_is_refused(fitted):
    decoder, planes, portrait = fitted
    same = fit_to_portrait(planes[0], decoder, portrait, config=replace(TINY.portrait_fit, steps=0),
                           render=TINY.render)
    assert torch.equal(same, planes[0])
    with pytest.raises(DataError, match="NaN"):
        fit_to_portrait(planes[0], decoder, torch.full_like(portrait, float("nan")), config=TINY.portrait_fit,
                        render=TINY.render)
    with pytest.raises(DataError, match="shape"):
        fit_to_portrait(planes[0], decoder, portrait[0], config=TINY.portrait_fit, render=TINY.render)
    with pytest.raises(ConfigError, match="steps"):
        fit_to_portrait(planes[0], decoder, portrait, config=replace(TINY.portrait_fit, steps=-1), render=TINY.render)
    assert all(p.requires_grad for p in decoder.parameters())     # the decoder is handed back as it came


def test_a_portraits_avatar_is_fitted_to_it_and_edits_keep_the_fit(tiny_semantic_model, tiny_fit_run):
    from rodin.pipeline import RodinPipeline

    pipe = RodinPipeline.from_pretrained(tiny_semantic_model)
    assert pipe.portrait_fit == TINY.portrait_fit          # the model index names the preset's settings
    portrait = next((tiny_fit_run / "data").glob("subject_*/portrait.png"))
    drawn = pipe(image=portrait, seed=1, steps=2, portrait_steps=0)
    avatar = pipe(image=portrait, seed=1, steps=2)
    assert avatar.info["portrait_steps"] == TINY.portrait_fit.steps and "portrait_steps" not in drawn.info
    target = prepare_portrait(portrait, size=32).pixels
    assert ((_portrait_view(avatar.planes, pipe.decoder) - target).pow(2).mean()
            < (_portrait_view(drawn.planes, pipe.decoder) - target).pow(2).mean())
    # An edit of the fitted avatar is the edited drawn avatar refitted to the fitted one's portrait view
    # outside what the edit changes.
    edited, plain = (pipe.edit(a, edit="with red hair") for a in (avatar, drawn))
    assert edited.info["portrait_steps"] == TINY.portrait_fit.steps and "portrait_steps" not in plain.info
    torch.testing.assert_close(edited.planes, pipe.refit_edit(avatar.planes, drawn.planes, plain.planes, seed=1))
    assert not torch.equal(edited.planes, avatar.planes)
    # Editing at generation time gives the same avatar as editing afterwards.
    at_once = pipe(image=portrait, seed=1, steps=2, edit="with red hair")
    torch.testing.assert_close(at_once.planes, edited.planes, atol=1e-5, rtol=0)
    # Prompts and seeds have no portrait: nothing is fitted.
    assert "portrait_steps" not in pipe(seed=3, steps=2).info


def test_a_malformed_portrait_fit_in_the_model_index_is_one_clear_error(tiny_semantic_model, tmp_path):
    import json
    import shutil

    from rodin.pipeline import RodinPipeline

    copy = tmp_path / "model"
    shutil.copytree(tiny_semantic_model, copy)
    index = json.loads((copy / "model_index.json").read_text())
    index["portrait_fit"] = {"stpes": 3}
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="model_index.json.*stpes"):
        RodinPipeline.from_pretrained(copy)
    del index["portrait_fit"]                 # models written before the fit existed: the preset's settings
    (copy / "model_index.json").write_text(json.dumps(index))
    assert RodinPipeline.from_pretrained(copy).portrait_fit == TINY.portrait_fit


def test_an_edited_portrait_is_the_fitted_view_where_the_edit_changes_nothing(fitted):
    from rodin.fit.portrait import edited_portrait, portrait_view

    decoder, planes, _ = fitted
    config, render = replace(TINY.portrait_fit, edit_threshold=0.1), TINY.render
    mine, other = planes[0], planes[1]
    view = portrait_view(mine, decoder, resolution=config.resolution, render=render)
    # An edit that changes nothing leaves the fitted avatar's own view.
    torch.testing.assert_close(edited_portrait(mine, other, other, decoder, config=config, render=render), view)
    # Where the edit changes the drawn view by the threshold or more, the edited view is taken whole.
    target = edited_portrait(mine, mine, other, decoder, config=config, render=render)
    now = portrait_view(other, decoder, resolution=config.resolution, render=render)
    changed = (now - view).abs().amax(0) >= 0.1
    assert changed.any() and (~changed).any()
    torch.testing.assert_close(target[:, changed], now[:, changed])
