"""The rodin command speaks to people: one line and a non-zero exit on bad input, JSON last in bench."""

import json
import subprocess
import sys

import pytest

from rodin.cli.main import main


def run_cli(*args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_missing_dataset_is_one_line_exit_2(capsys, tmp_path):
    code, _, err = run_cli("fit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "nowhere" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_malformed_transforms_names_the_file(capsys, tmp_path):
    subject = tmp_path / "subject"
    subject.mkdir()
    (subject / "transforms.json").write_text('{"camera_angle_x": 0.7, "frames": [')
    code, _, err = run_cli("fit", str(subject), "--out", str(tmp_path / "run"), "--preset", "tiny",
                           capsys=capsys)
    last = err.strip().splitlines()[-1]       # a dataset run also lists each skipped subject first
    assert code == 2 and last.startswith("error: ") and "transforms.json" in last and "Traceback" not in err


def test_unknown_preset_and_benchmark(capsys, tmp_path):
    code, _, err = run_cli("fit", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "huge", capsys=capsys)
    assert code == 2 and "unknown preset 'huge'" in err
    code, _, err = run_cli("bench", "nope", capsys=capsys)
    assert code == 2 and "unknown benchmark 'nope'" in err


def test_render_refuses_unknown_output_type_before_work(capsys, tmp_path):
    code, _, err = run_cli("render", str(tmp_path), "--out", str(tmp_path / "x.avi"), capsys=capsys)
    assert code == 2 and ".avi" in err


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rodin.cli.main", "--debug", "fit", str(tmp_path / "no"),
                             "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_data_synth_and_show_through_the_cli(capsys, tmp_path):
    code, _, _ = run_cli("data", "synth", "--out", str(tmp_path / "d"), "--subjects", "2", "--views", "4",
                         "--resolution", "16", "--portrait-resolution", "16", "--seed", "3", capsys=capsys)
    assert code in (0, None)
    assert (tmp_path / "d" / "index.json").is_file()
    code, _, _ = run_cli("data", "show", str(tmp_path / "d"), "--out", str(tmp_path / "sheet.png"), capsys=capsys)
    assert code in (0, None) and (tmp_path / "sheet.png").stat().st_size > 0


def test_bench_prints_json_last(capsys):
    code, out, _ = run_cli("bench", "decode", "--quick", capsys=capsys)
    assert code in (0, None)
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["benchmark"] == "decode" and figures["forward_mpts"] > 0
