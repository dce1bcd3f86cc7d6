"""LPIPS from local weights: checkpoints saved the way torchvision and the LPIPS repository save them are
converted, checked and loaded; the distance has the structure of the paper (checked by hand against one
layer and against all five), behaves as a distance should, and `rodin eval fit --lpips` reports it."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_mesh import run_cli, write_sphere_run

from rodin.errors import ConfigError, DataError
from rodin.eval.lpips import load_lpips
from rodin.eval.lpips_convert import convert_lpips

# torchvision's layouts, written out here independently of rodin.eval.lpips: conv index -> weight shape.
ALEX = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
ALEX_LIN = (64, 192, 384, 256, 256)
VGG16 = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
         17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
VGG_LIN = (64, 128, 256, 512, 512)
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)     # LPIPS's input scaling, from the paper's code
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def backbone_state(layout: dict, *, seed: int) -> dict[str, torch.Tensor]:
    """Random He-scaled weights under torchvision's names, with a classifier tensor that must be dropped."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for index, shape in layout.items():
        shape = shape if len(shape) == 4 else (*shape, 3, 3)
        fan_in = shape[1] * shape[2] * shape[3]
        state[f"features.{index}.weight"] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    state["classifier.6.bias"] = torch.zeros(1000)
    return state


def linear_state(channels: tuple[int, ...], *, seed: int, only: int | None = None) -> dict[str, torch.Tensor]:
    """The LPIPS repository's names (dropout at model.0, the 1x1 conv at model.1); non-negative weights, or
    ones at layer `only` and zeros elsewhere."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, c in enumerate(channels):
        w = torch.rand(1, c, 1, 1, generator=g)
        if only is not None:
            w = torch.full((1, c, 1, 1), float(k == only))
        state[f"lin{k}.model.1.weight"] = w
    return state


def save_pair(folder, backbone: dict, linear: dict):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(backbone, folder / "backbone.pth")
    torch.save(linear, folder / "linear.pth")
    return folder / "backbone.pth", folder / "linear.pth"


def alex_taps(state: dict, images: torch.Tensor) -> list[torch.Tensor]:
    """AlexNet's five ReLU outputs by hand, with torch.nn.functional only."""
    x = ((images * 2 - 1) - SHIFT) / SCALE

    def conv(x, i, stride=1, padding=1):
        return F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], stride=stride,
                               padding=padding))

    a1 = conv(x, 0, stride=4, padding=2)
    a2 = conv(F.max_pool2d(a1, 3, 2), 3, padding=2)
    a3 = conv(F.max_pool2d(a2, 3, 2), 6)
    a4 = conv(a3, 8)
    return [a1, a2, a3, a4, conv(a4, 10)]


def unit(a: torch.Tensor) -> torch.Tensor:
    return a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)


def smooth_images(n: int, size: int, *, seed: int) -> torch.Tensor:
    """Images with structure (blurred noise, upsampled), in [0.2, 0.8]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return 0.2 + 0.6 * F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def alex(tmp_path_factory):
    root = tmp_path_factory.mktemp("lpips")
    backbone, linear = backbone_state(ALEX, seed=0), linear_state(ALEX_LIN, seed=1)
    paths = save_pair(root / "pth", backbone, linear)
    folder = convert_lpips(backbone=paths[0], linear=paths[1], out=root / "alex")
    return folder, backbone, linear


def test_conversion_keeps_the_trunk_and_renames_the_linear_layers(alex):
    folder, backbone, linear = alex
    saved = load_file(str(folder / "model.safetensors"))
    assert "classifier.6.bias" not in saved
    assert torch.equal(saved["features.8.weight"], backbone["features.8.weight"])
    assert torch.equal(saved["lin.2.weight"], linear["lin2.model.1.weight"])
    assert json.loads((folder / "config.json").read_text()) == {"kind": "lpips", "config": {"net": "alex"}}


def test_identical_images_score_zero_and_the_distance_is_symmetric(alex):
    network = load_lpips(alex[0])
    x, y = smooth_images(3, 48, seed=2), smooth_images(3, 48, seed=3)
    assert torch.equal(network(x, x), torch.zeros(3))
    forward, backward = network(x, y), network(y, x)
    assert (forward > 0).all()
    torch.testing.assert_close(forward, backward, rtol=1e-5, atol=1e-7)


def test_distance_grows_with_the_noise_level(alex):
    network = load_lpips(alex[0])
    x = smooth_images(4, 64, seed=4)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    distances = [float(network(x, (x + level * noise).clamp(0, 1)).mean()) for level in (0.01, 0.03, 0.1, 0.3)]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


@pytest.mark.parametrize("layer", [0, 1, 4])
def test_one_layer_with_unit_weights_is_the_hand_computed_feature_distance(tmp_path, layer):
    backbone = backbone_state(ALEX, seed=6)
    paths = save_pair(tmp_path, backbone, linear_state(ALEX_LIN, seed=0, only=layer))
    network = load_lpips(convert_lpips(backbone=paths[0], linear=paths[1], out=tmp_path / "one"))
    x, y = smooth_images(2, 40, seed=7), smooth_images(2, 40, seed=8)
    expected = (unit(alex_taps(backbone, x)[layer]) - unit(alex_taps(backbone, y)[layer])).pow(2).sum(1).mean((1, 2))
    torch.testing.assert_close(network(x, y), expected, rtol=1e-4, atol=1e-6)


def test_all_five_layers_weighted_and_summed_by_hand(alex):
    folder, backbone, linear = alex
    x, y = smooth_images(2, 64, seed=9), smooth_images(2, 64, seed=10)
    fx, fy = alex_taps(backbone, x), alex_taps(backbone, y)
    expected = sum((linear[f"lin{k}.model.1.weight"] * (unit(a) - unit(b)).pow(2)).sum(1).mean((1, 2))
                   for k, (a, b) in enumerate(zip(fx, fy)))
    torch.testing.assert_close(load_lpips(folder)(x, y), expected, rtol=1e-4, atol=1e-6)


def test_metric_layout_matches_psnr_and_ssim(alex):
    from rodin.eval.metrics import lpips

    network = load_lpips(alex[0])
    x, y = smooth_images(4, 32, seed=11), smooth_images(4, 32, seed=12)
    hwc = lpips(x.permute(0, 2, 3, 1).reshape(2, 2, 32, 32, 3), y.permute(0, 2, 3, 1).reshape(2, 2, 32, 32, 3),
                network=network)
    assert hwc.shape == (2, 2)
    torch.testing.assert_close(hwc.flatten(), network(x, y))


def test_vgg16_trunk_converts_and_reads_its_first_tap(tmp_path):
    backbone = backbone_state(VGG16, seed=13)
    paths = save_pair(tmp_path, backbone, linear_state(VGG_LIN, seed=0, only=0))
    network = load_lpips(convert_lpips(backbone=paths[0], linear=paths[1], out=tmp_path / "vgg", net="vgg16"))
    x, y = smooth_images(2, 32, seed=14), smooth_images(2, 32, seed=15)

    def relu1_2(images):
        h = ((images * 2 - 1) - SHIFT) / SCALE
        h = F.relu(F.conv2d(h, backbone["features.0.weight"], backbone["features.0.bias"], padding=1))
        return unit(F.relu(F.conv2d(h, backbone["features.2.weight"], backbone["features.2.bias"], padding=1)))

    assert torch.equal(network(x, x), torch.zeros(2))
    torch.testing.assert_close(network(x, y), (relu1_2(x) - relu1_2(y)).pow(2).sum(1).mean((1, 2)),
                               rtol=1e-4, atol=1e-6)


def test_names_and_shapes_are_checked_with_the_tensor_named(tmp_path):
    backbone, linear = backbone_state(ALEX, seed=0), linear_state(ALEX_LIN, seed=0)

    def convert(b, lin, net="alex"):
        paths = save_pair(tmp_path / "in", b, lin)
        return convert_lpips(backbone=paths[0], linear=paths[1], out=tmp_path / "out", net=net)

    with pytest.raises(DataError, match=r"'lin2.model.1.weight' has shape \(1, 100, 1, 1\).*\(1, 384, 1, 1\)"):
        convert(backbone, {**linear, "lin2.model.1.weight": torch.rand(1, 100, 1, 1)})
    with pytest.raises(DataError, match="missing tensor 'lin4.model.1.weight'"):
        convert(backbone, {k: v for k, v in linear.items() if not k.startswith("lin4")})
    with pytest.raises(DataError, match="unexpected tensor 'scaling_layer.shift'"):
        convert(backbone, {**linear, "scaling_layer.shift": torch.zeros(1, 3, 1, 1)})
    with pytest.raises(DataError, match="missing tensor 'features.3.weight'"):
        convert({k: v for k, v in backbone.items() if k != "features.3.weight"}, linear)
    with pytest.raises(DataError, match="unexpected tensor 'fc.weight'"):
        convert({**backbone, "fc.weight": torch.zeros(2, 2)}, linear)
    with pytest.raises(DataError, match=r"'features.0.weight' has shape \(64, 3, 3, 3\).*alex"):
        convert(backbone_state({0: (64, 3)}, seed=0), linear)          # a VGG trunk given as AlexNet
    with pytest.raises(DataError, match="NaN"):
        convert({**backbone, "features.6.bias": torch.full((384,), float("nan"))}, linear)
    with pytest.raises(ConfigError, match="unknown LPIPS trunk 'resnet'"):
        convert(backbone, linear, net="resnet")
    with pytest.raises(DataError, match="not found"):
        convert_lpips(backbone=tmp_path / "none.pth", linear=tmp_path / "in" / "linear.pth", out=tmp_path / "x")
    assert not (tmp_path / "out").exists()                              # nothing written by a failed conversion


class _Payload:
    """Unpickling this would create a folder: a stand-in for code a hostile checkpoint runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_pickles_holding_more_than_tensors_are_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"features.0.weight": _Payload(marker)}, tmp_path / "hostile.pth")
    torch.save(linear_state(ALEX_LIN, seed=0), tmp_path / "linear.pth")
    with pytest.raises(DataError, match="more than tensors"):
        convert_lpips(backbone=tmp_path / "hostile.pth", linear=tmp_path / "linear.pth", out=tmp_path / "out")
    assert not marker.exists()


def test_the_loader_refuses_pickled_weights_and_missing_folders(alex, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((alex[0] / "config.json").read_text())
    torch.save(load_file(str(alex[0] / "model.safetensors")), folder / "model.pth")
    with pytest.raises(DataError, match="pickled weights"):
        load_lpips(folder)
    with pytest.raises(DataError, match="rodin convert lpips"):
        load_lpips(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no config.json"):
        load_lpips(tmp_path)


def test_images_too_small_for_the_trunk_are_refused(alex):
    with pytest.raises(DataError, match="at least 31 px"):
        load_lpips(alex[0])(torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24))


def test_convert_command(tmp_path, capsys):
    paths = save_pair(tmp_path, backbone_state(ALEX, seed=0), linear_state(ALEX_LIN, seed=0))
    code, out, err = run_cli("convert", "lpips", "--backbone", paths[0], "--linear", paths[1], "--out",
                             tmp_path / "made", capsys=capsys)
    assert code in (0, None), err
    assert json.loads(out.strip().splitlines()[-1])["net"] == "alex"
    assert (tmp_path / "made" / "model.safetensors").is_file()
    code, _, err = run_cli("convert", "lpips", "--backbone", paths[1], "--linear", paths[1], "--out",
                           tmp_path / "bad", capsys=capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "features.0.weight" in err


def test_eval_fit_reports_heldout_lpips(tiny_fit_run, alex, capsys):
    from rodin.cli.export import open_run
    from rodin.config import get_preset
    from rodin.eval.heldout import render_heldout
    from rodin.eval.metrics import lpips
    from rodin.fit.run import LoadOptions, SubjectSource, load_fit_subject

    run, data = tiny_fit_run / "run", tiny_fit_run / "data"
    code, out, err = run_cli("eval", "fit", run, "--data", data, "--lpips", alex[0], "--subjects", "1",
                             "--resolution", "16", "--points", "500", capsys=capsys)
    assert code in (0, None), err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["lpips_net"] == "alex" and summary["lpips_subjects"] == 1
    assert "LPIPS" in out
    # The same figure, computed directly from the renders of the first subject's held-out views.
    store, decoder = open_run(run)
    sid = store.ids[0]
    preset = get_preset("tiny")
    subject = load_fit_subject(SubjectSource(sid, data / sid, store.splits[0]), config=preset.fit,
                               options=LoadOptions())
    views = render_heldout(subject, store.get(0)[None], decoder, preset=preset)
    direct = float(lpips(views.rendered, views.target, network=load_lpips(alex[0])).mean())
    assert summary["heldout_lpips_mean"] == pytest.approx(direct, rel=1e-4) and direct > 0
    saved = json.loads((run / "eval_fit.json").read_text())
    assert saved["per_subject"][sid]["lpips"] == pytest.approx(direct, rel=1e-4)


def test_eval_fit_lpips_errors_are_one_line(alex, tmp_path, capsys):
    run = write_sphere_run(tmp_path / "run")                           # a run with no data folder recorded
    code, _, err = run_cli("eval", "fit", run, "--lpips", tmp_path / "nowhere", capsys=capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "rodin convert lpips" in err
    code, _, err = run_cli("eval", "fit", run, "--lpips", alex[0], capsys=capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "give --data" in err
