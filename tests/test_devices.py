"""Choosing a device: names the machine has work, others are refused in one line before any work."""

import pytest
import torch

from rodin.cli.main import main
from rodin.devices import parse_device
from rodin.errors import ConfigError


def test_cpu_and_unknown_names():
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a device name"):
        parse_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        parse_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_follows_the_launchers_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))       # wraps round to GPU 0
    assert parse_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="CUDA GPU"):
        parse_device(f"cuda:{torch.cuda.device_count()}")


def test_fit_with_an_unusable_device_writes_nothing(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(tmp_path), "--out", str(tmp_path / "run"), "--device", "gpu0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "--device 'gpu0'" in err
    assert not (tmp_path / "run").exists()


def test_device_options_belong_to_their_benchmarks(capsys):
    for args in (["bench", "synth", "--device", "cpu:0"], ["bench", "fit", "--precision", "bf16"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and ("apply to" in err or "applies to" in err), err
