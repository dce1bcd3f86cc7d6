import json

import pytest

from rodin.config import PRESETS, DecoderConfig, FitConfig, from_dict, get_preset, load_config, to_dict
from rodin.errors import ConfigError


def test_presets_match_design_sizes():
    tiny, small, paper = (get_preset(n) for n in ("tiny", "small", "paper"))
    assert (tiny.triplane.base_resolution, tiny.triplane.resolution, tiny.triplane.channels) == (16, 32, 8)
    assert (small.triplane.base_resolution, small.triplane.resolution) == (32, 64)
    assert 16 <= small.triplane.channels <= 32 and small.render.resolution == 64
    assert (paper.triplane.base_resolution, paper.triplane.resolution, paper.triplane.channels) == (64, 256, 32)
    for preset in PRESETS.values():
        assert preset.decoder.features == preset.triplane.channels


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        get_preset("huge")


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="'hiden'"):
        from_dict(DecoderConfig, {"hiden": 64})


@pytest.mark.parametrize("key,value", [("hidden", "64"), ("hidden", 64.5), ("view_dependent", 1),
                                       ("hidden", True)])
def test_wrong_types_are_errors(key, value):
    with pytest.raises(ConfigError, match=key):
        from_dict(DecoderConfig, {key: value})


def test_round_trip_and_file_errors(tmp_path):
    config = FitConfig(steps=7, plane_lr=0.5)
    assert from_dict(FitConfig, to_dict(config)) == config
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"steps": 3}))
    assert load_config(FitConfig, path).steps == 3
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(FitConfig, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(FitConfig, tmp_path / "missing.json")
