"""Bad inputs through the real `rodin` command: one `error:` line, exit code 2, no traceback, and no
output folder left behind (or the existing one unchanged). docs/bad_inputs.md lists every case we handle
with the test that proves it; the cases already proven elsewhere are referenced there, not repeated here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from test_nerf import png_header

from rodin.cli.main import main
from rodin.config import DecoderConfig, get_preset
from rodin.errors import RodinError


def run_cli(args: list, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def assert_one_clear_line(code: int, err: list[str], *words: str) -> None:
    assert code == 2, err
    assert err and err[-1].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    for word in words:
        assert word in err[-1], (word, err[-1])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> Path:
    """One small generated subject (4 views of 16², a portrait)."""
    from rodin.data.synth import synth_dataset

    data = tmp_path_factory.mktemp("bad") / "data"
    synth_dataset(data, subjects=1, views=4, resolution=16, seed=0, portrait_resolution=16, progress=False)
    return data / "subject_00000"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny model folder (random weights): enough to load, check inputs and refuse them."""
    from rodin.diffusion.base import KIND as BASE_KIND
    from rodin.diffusion.base import BaseDiffusion
    from rodin.fit.run import DECODER_KIND
    from rodin.modeling import save_component
    from rodin.pipeline import write_model_index
    from rodin.semantic.pixel_encoder import KIND as LATENT_KIND
    from rodin.semantic.pixel_encoder import PixelEncoder, PixelEncoderConfig
    from rodin.triplane.decoder import TriplaneDecoder

    preset = get_preset("tiny")
    folder = tmp_path_factory.mktemp("model") / "tiny"
    torch.manual_seed(0)
    save_component(BaseDiffusion(preset.base), folder / "base", kind=BASE_KIND)
    save_component(TriplaneDecoder(DecoderConfig(features=8, hidden=16)), folder / "decoder", kind=DECODER_KIND)
    encoder = PixelEncoder(PixelEncoderConfig(dim=preset.base.unet.latent_dim))
    encoder.fit(torch.rand(20, 3, encoder.config.image_size, encoder.config.image_size))
    save_component(encoder, folder / "latent", kind=LATENT_KIND)
    write_model_index(folder, render=preset.render, preset="tiny",
                      components={"base": "base", "decoder": "decoder", "latent": "latent"})
    return folder


# --- rodin fit on a broken subject folder ------------------------------------------------------------------


def _image(subject: Path, k: int = 1) -> Path:
    return subject / "images" / f"r_{k:03d}.png"


def _edit_transforms(change):
    def apply(subject: Path) -> None:
        doc = json.loads((subject / "transforms.json").read_text())
        change(doc)
        (subject / "transforms.json").write_text(json.dumps(doc))
    return apply


def _set_matrix_entry(value):
    def change(doc):
        doc["frames"][0]["transform_matrix"][0][3] = value
    return _edit_transforms(change)


FIT_CASES = {
    "empty image file": (lambda s: _image(s).write_bytes(b""), "not a readable image"),
    "truncated image": (lambda s: _image(s).write_bytes(_image(s).read_bytes()[:60]), "r_001.png"),
    "text file as image": (lambda s: _image(s).write_text("not a picture"), "not a readable image"),
    "missing image": (lambda s: _image(s).unlink(), "not found"),
    "huge image": (lambda s: _image(s).write_bytes(png_header(9000, 9000)), "larger than"),
    "decompression bomb": (lambda s: _image(s).write_bytes(png_header(30000, 30000)), "too large"),
    "mixed sizes": (lambda s: Image.new("RGBA", (16, 12)).save(_image(s)), "must share one size"),
    "empty transforms.json": (lambda s: (s / "transforms.json").write_text(""), "invalid JSON"),
    "transforms.json not JSON": (lambda s: (s / "transforms.json").write_text("{frames: ["), "invalid JSON"),
    "NaN in a matrix": (_set_matrix_entry(float("nan")), "NaN"),
    "infinity in a matrix": (_set_matrix_entry(float("inf")), "infinity"),
    "3x3 matrix": (_edit_transforms(lambda d: d["frames"][0].update(transform_matrix=np.eye(3).tolist())), "4x4"),
    "no frames": (_edit_transforms(lambda d: d.update(frames=[])), "frames"),
    "path escaping the folder": (_edit_transforms(lambda d: d["frames"][0].update(file_path="../../etc/passwd")),
                                 "outside the subject folder"),
    "absolute path": (_edit_transforms(lambda d: d["frames"][0].update(file_path="/etc/passwd")), "absolute"),
    "no field of view": (_edit_transforms(lambda d: d.pop("camera_angle_x")), "camera_angle_x"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_refuses_a_broken_subject_and_leaves_no_run_folder(subject, tmp_path, capsys, case):
    broken = tmp_path / "s"
    shutil.copytree(subject, broken)
    damage, words = FIT_CASES[case]
    damage(broken)
    code, err = run_cli(["fit", broken, "--out", tmp_path / "run", "--preset", "tiny", "--steps", "1"], capsys)
    assert_one_clear_line(code, err, words, str(broken))
    assert not (tmp_path / "run").exists()


def test_fit_into_its_own_dataset_is_refused_and_the_dataset_unchanged(subject, tmp_path, capsys):
    data = tmp_path / "s"
    shutil.copytree(subject, data)
    before = snapshot(data)
    for out in (data, data / "run"):
        code, err = run_cli(["fit", data, "--out", out, "--preset", "tiny"], capsys)
        assert_one_clear_line(code, err, "inside the dataset")
    assert snapshot(data) == before


def test_fit_into_a_path_under_a_file_is_one_line(subject, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    code, err = run_cli(["fit", subject, "--out", tmp_path / "file.txt" / "run", "--preset", "tiny"], capsys)
    assert_one_clear_line(code, err, "file.txt")
    assert (tmp_path / "file.txt").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_fit_into_a_read_only_folder_is_one_line(subject, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = run_cli(["fit", subject, "--out", locked / "run", "--preset", "tiny"], capsys)
    finally:
        locked.chmod(0o755)
    assert_one_clear_line(code, err, "locked")
    assert not list(locked.iterdir())


# --- rodin generate / edit / render ------------------------------------------------------------------------

def _write(name: str, data: bytes):
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name
    return make


def _png(name: str, array: np.ndarray):
    def make(folder: Path) -> Path:
        Image.fromarray(array).save(folder / name)
        return folder / name
    return make


PORTRAIT_CASES = {
    "empty portrait": (_write("p.png", b""), "p.png"),
    "text as portrait": (_write("p.png", b"hello"), "p.png"),
    "truncated portrait": (lambda f: _write("p.png", _tiny_png()[:50])(f), "p.png"),
    "huge portrait": (_write("p.png", png_header(30000, 30000)), "p.png"),
    "missing portrait": (lambda f: f / "nothing.png", "portrait not found"),
}


def _tiny_png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(PORTRAIT_CASES))
def test_generate_refuses_a_bad_portrait_and_writes_nothing(model, tmp_path, capsys, case):
    make, words = PORTRAIT_CASES[case]
    portrait = make(tmp_path)
    code, err = run_cli(["generate", "--model", model, "--image", portrait, "--out", tmp_path / "out",
                         "--steps", "1"], capsys)
    assert_one_clear_line(code, err, words)
    assert not (tmp_path / "out").exists()


def test_generate_over_its_own_portrait_is_refused(model, tmp_path, capsys):
    (tmp_path / "views.png").write_bytes(_tiny_png())
    before = snapshot(tmp_path)
    code, err = run_cli(["generate", "--model", model, "--image", tmp_path / "views.png", "--out", tmp_path,
                         "--steps", "1"], capsys)
    assert_one_clear_line(code, err, "would replace the input")
    assert snapshot(tmp_path) == before


def test_generate_into_an_existing_file_is_refused(model, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    code, err = run_cli(["generate", "--model", model, "--out", tmp_path / "taken"], capsys)
    assert_one_clear_line(code, err, "not a folder")
    assert (tmp_path / "taken").read_text() == "mine"


def test_edit_over_its_own_avatar_is_refused(model, tmp_path, capsys):
    from rodin.pipeline import RodinPipeline

    folder = tmp_path / "avatar"
    RodinPipeline.from_pretrained(model)(seed=0, steps=1).save(folder / "avatar.safetensors")
    before = snapshot(folder)
    code, err = run_cli(["edit", folder / "avatar.safetensors", "--edit", "with red hair", "--out", folder], capsys)
    assert_one_clear_line(code, err, "would replace the input")
    assert snapshot(folder) == before


def test_train_edits_refuses_what_it_cannot_measure(model, subject, tmp_path, capsys):
    before = snapshot(model)
    code, err = run_cli(["train", "edits", "--data", tmp_path / "nowhere", "--out", model], capsys)
    assert_one_clear_line(code, err, "no such dataset folder")
    code, err = run_cli(["train", "edits", "--data", subject.parent, "--out", model], capsys)
    assert_one_clear_line(code, err, "semantic")                # a pixel-PCA model has no text side
    assert snapshot(model) == before


def test_render_refuses_a_damaged_avatar_file(tmp_path, capsys):
    (tmp_path / "a.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    code, err = run_cli(["render", tmp_path / "a.safetensors", "--out", tmp_path / "t.png"], capsys)
    assert_one_clear_line(code, err, "a.safetensors")
    assert not (tmp_path / "t.png").exists()


@pytest.mark.parametrize("prompt, words", [("", "empty"), ("   ", "empty"), ("x" * 5000, "characters")])
def test_generate_refuses_empty_and_enormous_prompts(tmp_path, capsys, prompt, words):
    code, err = run_cli(["generate", "--prompt", prompt, "--out", tmp_path / "out", "--steps", "1"], capsys)
    assert_one_clear_line(code, err, words)
    assert not (tmp_path / "out").exists()


# --- broken model folders --------------------------------------------------------------------------------

def _tensors(folder: Path, change) -> None:
    tensors = load_file(str(folder / "decoder" / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "decoder" / "model.safetensors"))


def _first(tensors: dict) -> str:
    return sorted(tensors)[0]


def _config(folder: Path, change) -> None:
    path = folder / "decoder" / "config.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def _pickle_only(folder: Path) -> None:
    torch.save(load_file(str(folder / "decoder" / "model.safetensors")), folder / "decoder" / "pytorch_model.bin")
    (folder / "decoder" / "model.safetensors").unlink()


MODEL_CASES = {
    "weights missing": (lambda f: (f / "decoder" / "model.safetensors").unlink(), "missing"),
    "weights not safetensors": (lambda f: (f / "decoder" / "model.safetensors").write_bytes(b"junk"), "unreadable"),
    "a tensor missing": (lambda f: _tensors(f, lambda t: t.pop(_first(t))), "missing tensor"),
    "an extra tensor": (lambda f: _tensors(f, lambda t: t.update(extra=torch.zeros(2))), "unexpected tensor"),
    "a mis-shaped tensor": (lambda f: _tensors(f, lambda t: t.update({_first(t): torch.zeros(3, 3)})), "shape"),
    "integer weights": (lambda f: _tensors(f, lambda t: t.update({_first(t): t[_first(t)].to(torch.int32)})),
                        "dtype"),
    "NaN weights": (lambda f: _tensors(f, lambda t: t[_first(t)].fill_(float("nan"))), "NaN"),
    "pickled weights only": (_pickle_only, "pickled weights can run code"),
    "unknown config key": (lambda f: _config(f, lambda r: r["config"].update(widht=3)), "'widht'"),
    "wrong config type": (lambda f: _config(f, lambda r: r["config"].update(hidden="big")), "integer"),
    "config of another kind": (lambda f: _config(f, lambda r: r.update(kind="base-diffusion")), "not a"),
    "config not UTF-8": (lambda f: (f / "decoder" / "config.json").write_bytes(b"\xff\xfe{"), "not a JSON config"),
    "malformed model index": (lambda f: (f / "model_index.json").write_text("{"), "model_index.json"),
    "no model index": (lambda f: (f / "model_index.json").unlink(), "not a model folder"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_generate_refuses_a_broken_model_folder(model, tmp_path, capsys, case):
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    damage, words = MODEL_CASES[case]
    damage(broken)
    code, err = run_cli(["generate", "--model", broken, "--seed", "1", "--out", tmp_path / "out", "--steps", "1"],
                        capsys)
    assert_one_clear_line(code, err, words)
    assert not (tmp_path / "out").exists()


def test_pickled_weights_load_only_when_allowed(model, tmp_path):
    from rodin.pipeline import RodinPipeline

    pickled = tmp_path / "model"
    shutil.copytree(model, pickled)
    _pickle_only(pickled)
    with pytest.raises(RodinError, match="allow_pickle=True"):
        RodinPipeline.from_pretrained(pickled)
    trusted = RodinPipeline.from_pretrained(pickled, allow_pickle=True)
    reference = RodinPipeline.from_pretrained(model)
    for (name, a), b in zip(trusted.decoder.state_dict().items(), reference.decoder.state_dict().values()):
        assert torch.equal(a, b), name
    torch.save({"weights": [1, 2]}, pickled / "decoder" / "pytorch_model.bin")     # not a state dict of tensors
    with pytest.raises(RodinError, match="state dict of tensors"):
        RodinPipeline.from_pretrained(pickled, allow_pickle=True)


# --- presets and options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["fit", "{subject}", "--out", "{out}", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "base", "--triplanes", "{out}", "--out", "{out}2", "--preset", "galactic"], "unknown preset"),
    (["fit", "{subject}", "--out", "{out}", "--up", "sideways"], "--up must be"),
    (["train", "base", "--triplanes", "{subject}", "--out", "{out}", "--preset", "tiny"], "not a tri-plane store"),
])
def test_unknown_presets_and_settings_are_one_line(subject, tmp_path, capsys, args, words):
    out = tmp_path / "out"
    code, err = run_cli([a.format(subject=subject, out=out) for a in args], capsys)
    assert_one_clear_line(code, err, words)
    assert not out.exists()
