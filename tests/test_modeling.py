import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from rodin.config import DecoderConfig
from rodin.errors import ConfigError, DataError
from rodin.fit.store import TriplaneStore
from rodin.modeling import load_component, save_component
from rodin.triplane.decoder import TriplaneDecoder

KIND = "triplane-decoder"


def saved(tmp_path):
    torch.manual_seed(0)
    decoder = TriplaneDecoder(DecoderConfig(features=4, hidden=16))
    return decoder, save_component(decoder, tmp_path / "decoder", kind=KIND)


def test_save_load_round_trip(tmp_path):
    decoder, folder = saved(tmp_path)
    loaded = load_component(TriplaneDecoder, DecoderConfig, folder, kind=KIND)
    x, d = torch.randn(5, 4), torch.randn(5, 3)
    assert torch.equal(decoder(x, d).rgb, loaded(x, d).rgb)
    assert not list(folder.glob(".*tmp"))


def test_unknown_config_key_fails_by_name(tmp_path):
    _, folder = saved(tmp_path)
    raw = json.loads((folder / "config.json").read_text())
    raw["config"]["widht"] = 3
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="'widht'"):
        load_component(TriplaneDecoder, DecoderConfig, folder, kind=KIND)


def test_mismatched_missing_and_pickled_weights_are_refused(tmp_path):
    _, folder = saved(tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    name = next(iter(tensors))
    save_file({**tensors, name: torch.zeros(3, 3)}, str(folder / "model.safetensors"))
    with pytest.raises(DataError, match="shape"):
        load_component(TriplaneDecoder, DecoderConfig, folder, kind=KIND)
    save_file({k: v for k, v in tensors.items() if k != name}, str(folder / "model.safetensors"))
    with pytest.raises(DataError, match="missing tensor"):
        load_component(TriplaneDecoder, DecoderConfig, folder, kind=KIND)
    (folder / "model.safetensors").unlink()
    (folder / "model.pt").write_bytes(b"pickle")
    with pytest.raises(DataError, match="pickled weights can run code"):
        load_component(TriplaneDecoder, DecoderConfig, folder, kind=KIND)


def test_nan_weights_are_refused(tmp_path):
    _, folder = saved(tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    name = next(iter(tensors))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(DataError, match="NaN"):
        load_component(TriplaneDecoder, DecoderConfig, folder, kind=KIND)


def test_store_rows_stats_and_resume(tmp_path):
    ids = [f"s{i}" for i in range(5)]
    store = TriplaneStore.create(tmp_path / "t", ids, ["train"] * 4 + ["test"], (3, 2, 4, 4))
    planes = torch.randn(2, 3, 2, 4, 4)
    planes[:, :, 1] += 5.0
    store.put([1, 3], planes)
    reopened = TriplaneStore.create(tmp_path / "t", ids, ["train"] * 4 + ["test"], (3, 2, 4, 4))
    assert reopened.done == [False, True, False, True, False]
    assert torch.allclose(reopened.get([1, 3]), planes, atol=1e-2)          # float16 storage
    stats = reopened.compute_stats()
    assert abs(float(stats.mean[1]) - float(planes[:, :, 1].mean())) < 1e-2
    normed = stats.normalise(reopened.get(1))
    assert torch.allclose(stats.denormalise(normed), reopened.get(1), atol=1e-5)
    with pytest.raises(DataError, match="other subjects"):
        TriplaneStore.create(tmp_path / "t", ids[:3], ["train"] * 3, (3, 2, 4, 4))


def test_integer_weights_are_refused_and_half_precision_loads(tmp_path):
    decoder, folder = saved(tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k: v.half() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    loaded = load_component(TriplaneDecoder, DecoderConfig, folder, kind=KIND)
    assert next(loaded.parameters()).dtype == torch.float32
    name = next(iter(tensors))
    save_file({**tensors, name: tensors[name].to(torch.int32)}, str(folder / "model.safetensors"))
    with pytest.raises(DataError, match="dtype"):
        load_component(TriplaneDecoder, DecoderConfig, folder, kind=KIND)


def test_saving_in_half_precision_halves_the_file_and_loads_close(tmp_path):
    decoder, folder = saved(tmp_path)
    half = save_component(decoder, tmp_path / "half", kind=KIND, dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (folder / "model.safetensors").stat().st_size
    loaded = load_component(TriplaneDecoder, DecoderConfig, half, kind=KIND)
    for (name, a), b in zip(decoder.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
