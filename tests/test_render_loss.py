"""The photometric loss on renders of predicted tri-planes (rodin.train.render_loss), shared by the
base model and the upsampler."""

from __future__ import annotations

import torch

from rodin.config import DecoderConfig
from rodin.render.cameras import DEFAULT_FOV_X, orbit_cameras
from rodin.render.volume import render_views
from rodin.train.render_loss import ViewBank, draw_patches, patch_pixels, render_patch_loss
from rodin.triplane.decoder import TriplaneDecoder

RES = 16
SAMPLES = 16


def _scene():
    """Two random tri-planes, a decoder, and a bank holding exact renders of both from three views."""
    torch.manual_seed(0)
    decoder = TriplaneDecoder(DecoderConfig(features=4, hidden=16, layers=1)).requires_grad_(False)
    with torch.no_grad():          # steeper than at initialisation, so that the renders show the planes
        for weight in decoder.parameters():
            weight.mul_(4.0)
    planes = torch.randn(2, 3, 4, 8, 8)
    c2w = orbit_cameras([0.0, 90.0, 200.0], [10.0, -20.0, 30.0])
    views = [render_views(planes[k], decoder, c2w, DEFAULT_FOV_X, RES, samples=SAMPLES)[0] for k in range(2)]
    bank = ViewBank(rgb=(torch.stack(views) * 255).round().to(torch.uint8), c2w=c2w.expand(2, -1, -1, -1),
                    fov_x=torch.full((2,), DEFAULT_FOV_X),
                    boxes=torch.tensor([4, 2, 12, 10]).expand(2, 3, 4))
    return decoder, planes, bank


def _loss(planes, decoder, bank, subjects, draw):
    return render_patch_loss(planes, decoder, bank, torch.tensor(subjects), draw, patch=4, samples=SAMPLES,
                             background=1.0)


def test_patches_stay_in_the_view_and_mostly_in_the_foreground_box():
    _, _, bank = _scene()
    draw = draw_patches(torch.Generator().manual_seed(1), batch=2, views=3, patches=64)
    rows, cols = patch_pixels(bank, torch.tensor([0, 1]), draw, patch=4)
    assert rows.shape == (2, 64, 4, 4)
    assert rows.min() >= 0 and cols.min() >= 0 and rows.max() < RES and cols.max() < RES
    centre_r, centre_c = rows.float().mean(dim=(2, 3)), cols.float().mean(dim=(2, 3))
    boxed = ~draw.anywhere
    assert boxed.float().mean() > 0.6
    # Box (4, 2)-(12, 10): a boxed patch's centre lies in it, up to the half-pixel of rounding.
    assert (centre_r[boxed] >= 3.5).all() and (centre_r[boxed] <= 12.5).all()
    assert (centre_c[boxed] >= 1.5).all() and (centre_c[boxed] <= 10.5).all()


def test_the_right_planes_against_their_own_views_cost_nothing():
    decoder, planes, bank = _scene()
    draw = draw_patches(torch.Generator().manual_seed(2), batch=2, views=3, patches=4)
    exact = _loss(planes, decoder, bank, [0, 1], draw)
    swapped_subjects = _loss(planes, decoder, bank, [1, 0], draw)
    # Each view's image paired with the next view's camera:
    shifted = ViewBank(bank.rgb.roll(1, dims=1), bank.c2w, bank.fov_x, bank.boxes)
    swapped_views = _loss(planes, decoder, shifted, [0, 1], draw)
    assert exact < 1e-5                                        # only the uint8 rounding of the bank
    assert swapped_subjects > 100 * exact and swapped_views > 100 * exact


def test_the_gradient_reaches_the_planes_and_lowers_the_loss():
    decoder, planes, bank = _scene()
    guess = (planes + 0.5 * torch.randn_like(planes)).requires_grad_(True)
    opt = torch.optim.Adam([guess], lr=0.05)
    fixed = draw_patches(torch.Generator().manual_seed(4), batch=2, views=3, patches=8)
    first = _loss(guess, decoder, bank, [0, 1], fixed).item()
    for _ in range(20):
        loss = _loss(guess, decoder, bank, [0, 1], fixed)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.4 * first  # measured: 0.14x after 20 steps
