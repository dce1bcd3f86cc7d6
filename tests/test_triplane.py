import pytest
import torch

from rodin.config import DecoderConfig
from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.triplane import resize_planes, roll_in, roll_out


def test_roll_out_order_and_round_trip():
    planes = torch.randn(2, 3, 4, 5, 6)
    rolled = roll_out(planes)
    assert rolled.shape == (2, 4, 5, 18)
    # XY | XZ | YZ side by side along the width.
    assert torch.equal(rolled[..., 0:6], planes[:, 0])
    assert torch.equal(rolled[..., 6:12], planes[:, 1])
    assert torch.equal(rolled[..., 12:18], planes[:, 2])
    assert torch.equal(roll_in(rolled), planes)


def test_roll_in_rejects_widths_not_divisible_by_three():
    with pytest.raises(ValueError):
        roll_in(torch.zeros(4, 5, 7))


def test_resize_down_is_area_average_and_up_keeps_constants():
    planes = torch.arange(16.0).reshape(1, 1, 4, 4).expand(3, 1, 4, 4)
    small = resize_planes(planes, 2)
    assert small.shape == (3, 1, 2, 2)
    assert torch.allclose(small[0, 0, 0, 0], torch.tensor([0.0, 1, 4, 5]).mean())
    const = torch.full((3, 2, 8, 8), 0.7)
    assert torch.allclose(resize_planes(const, 16), const.new_full((3, 2, 16, 16), 0.7), atol=1e-6)


def test_decoder_outputs_are_valid_and_view_dependent():
    torch.manual_seed(0)
    decoder = TriplaneDecoder(DecoderConfig(features=8, hidden=32, extra_features=4))
    feats = torch.randn(100, 8) * 3
    a = decoder(feats, torch.nn.functional.normalize(torch.randn(100, 3), dim=-1))
    b = decoder(feats, torch.nn.functional.normalize(torch.randn(100, 3), dim=-1))
    assert (a.density >= 0).all() and torch.isfinite(a.density).all()
    assert (a.rgb >= -1e-3).all() and (a.rgb <= 1 + 1e-3).all()
    assert a.extra.shape == (100, 4)
    assert torch.equal(a.density, b.density)            # density ignores the view
    assert not torch.allclose(a.rgb, b.rgb)             # colour does not
