"""The CLIP adapter on a tiny random CLIP saved in the Hugging Face layout, with a real BPE tokenizer."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers.pre_tokenizers import ByteLevel

from rodin.errors import DataError
from rodin.semantic.clip_adapter import (
    CLIP_MEAN,
    CLIP_STD,
    ClipEncoder,
    load_clip_reference,
    save_clip_reference,
)
from rodin.semantic.space import SemanticEncoder

transformers = pytest.importorskip("transformers")

MEAN = (0.2, 0.5, 0.7)        # distinctive, so that a test sees which normalisation was applied
STD = (0.1, 0.3, 0.2)
MERGES = ["t h", "th e</w>", "h a", "ha i", "hai r</w>", "r e", "re d</w>", "a n", "an d</w>"]


def write_tiny_clip(folder):
    """A random CLIP (hidden 32, 2 layers, 32-pixel images in 8-pixel patches, 16-d embeddings) with a byte-level
    CLIP BPE vocabulary (256 bytes, the same with '</w>', a few merges, the two special tokens)."""
    folder.mkdir(parents=True)
    chars = sorted(ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    eos = vocab["<|endoftext|>"]
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=eos, pad_token_id=eos, **layers),
        vision_config=dict(image_size=32, patch_size=8, **layers), projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    return vocab


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    vocab = write_tiny_clip(folder)
    reference = transformers.CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()
    return folder, vocab, reference


@pytest.fixture(scope="module")
def encoder(clip):
    return ClipEncoder.from_path(clip[0])


def copy_of(clip, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(clip[0], folder)
    return folder


def by_hand(pixels, mean, std):
    x = F.interpolate(pixels, size=(32, 32), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_images_embed_as_clip_does_with_the_folders_normalisation(clip, encoder):
    _, _, reference = clip
    assert isinstance(encoder, SemanticEncoder) and encoder.dim == 16 and encoder.image_size == 32
    pixels = torch.ones(2, 3, 48, 48)                                    # white, a red disc on one, noise on the other
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    pixels[0, 1:, (yy - 24) ** 2 + (xx - 24) ** 2 < 15 ** 2] = 0.0
    pixels[1] = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(1))
    embeddings = encoder.encode_images(pixels)
    assert embeddings.shape == (2, 16) and embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(embeddings, encoder.encode_images(pixels))                  # deterministic
    assert torch.allclose(embeddings[1:], encoder.encode_images(pixels[1:]), atol=1e-6)   # batching changes nothing
    assert (embeddings[0] @ embeddings[1]) < 0.99                                   # different images differ
    with torch.no_grad():
        expected = F.normalize(reference.get_image_features(pixel_values=by_hand(pixels, MEAN, STD)).pooler_output)
        standard = F.normalize(reference.get_image_features(
            pixel_values=by_hand(pixels, CLIP_MEAN, CLIP_STD)).pooler_output)
    assert torch.allclose(embeddings, expected, atol=1e-5)
    assert not torch.allclose(embeddings, standard, atol=1e-3)                      # the folder's mean/std matter


def test_texts_embed_as_clip_does_through_a_real_bpe_tokenizer(clip, encoder):
    _, vocab, reference = clip
    texts = ["the hair", "a red hat and glasses", ""]
    embeddings = encoder.encode_texts(texts)
    assert embeddings.shape == (3, 16)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(embeddings, encoder.encode_texts(texts))
    assert (embeddings @ embeddings.T - torch.eye(3)).max() < 0.99                  # different sentences differ
    # "the hair" is bos, the merged tokens "the</w>" and "hair</w>", eos: the BPE merges are applied
    ids = [vocab["<|startoftext|>"], vocab["the</w>"], vocab["hair</w>"], vocab["<|endoftext|>"]]
    assert encoder.tokenizer(["the hair"])["input_ids"][0] == ids
    with torch.no_grad():
        expected = F.normalize(reference.get_text_features(input_ids=torch.tensor([ids])).pooler_output)
    assert torch.allclose(embeddings[:1], expected, atol=1e-5)
    # the text tower reads 16 positions: longer sentences are cut to bos + 14 words + eos
    long, cut = encoder.encode_texts(["the " * 100, "the " * 14])
    assert torch.allclose(long, cut, atol=1e-6)


def test_a_reference_is_saved_without_weights_and_loads_back(clip, encoder, tmp_path):
    save_clip_reference(encoder, tmp_path / "ref")
    assert json.loads((tmp_path / "ref" / "config.json").read_text()) == {
        "kind": "clip-adapter", "config": {"path": str(clip[0])}}
    assert [p.name for p in (tmp_path / "ref").iterdir()] == ["config.json"]
    pixels = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(load_clip_reference(tmp_path / "ref").encode_images(pixels), encoder.encode_images(pixels))

    moved = copy_of(clip, tmp_path)
    save_clip_reference(ClipEncoder.from_path(moved), tmp_path / "ref2")
    shutil.rmtree(moved)
    with pytest.raises(DataError, match="is gone") as err:
        load_clip_reference(tmp_path / "ref2")
    assert str(moved) in str(err.value)


def test_pickled_weights_are_read_only_when_allowed(clip, encoder, tmp_path):
    folder = copy_of(clip, tmp_path)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(DataError, match="pickled weights.*can run code.*allow_pickle=True") as err:
        ClipEncoder.from_path(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    texts = ["the red hair"]
    pickled = ClipEncoder.from_path(folder, allow_pickle=True)
    assert torch.allclose(pickled.encode_texts(texts), encoder.encode_texts(texts), atol=1e-6)


def _bert_config(folder):
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))


def _drop_tokenizer(folder):
    (folder / "vocab.json").unlink()
    (folder / "merges.txt").unlink()


def _drop_tensor(folder):
    tensors = load_file(folder / "model.safetensors")
    del tensors["visual_projection.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _reshape_tensor(folder):
    tensors = load_file(folder / "model.safetensors")
    tensors["text_projection.weight"] = tensors["text_projection.weight"][:, :8].contiguous()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("break_it, message", [
    (lambda f: shutil.rmtree(f), "CLIP folder not found"),
    (lambda f: shutil.rmtree(f) or f.write_text("x"), "not a folder"),
    (lambda f: (f / "config.json").unlink(), "config.json: missing"),
    (_bert_config, "'bert' model, not CLIP"),
    (_drop_tokenizer, "no tokenizer files"),
    (lambda f: (f / "model.safetensors").unlink(), "no model.safetensors"),
    (lambda f: (f / "model.safetensors").write_bytes(b"not a safetensors file"), "unreadable CLIP weights"),
    (_drop_tensor, "lack tensor 'visual_projection.weight'"),
    (_reshape_tensor, r"'text_projection.weight' has shape \(16, 8\) but config.json asks for \(16, 32\)"),
    (lambda f: (f / "preprocessor_config.json").write_text('{"image_std": [1, 0, 1]}'), "image_mean and image_std"),
])
def test_unusable_folders_are_refused_in_one_line_naming_the_path(clip, tmp_path, break_it, message):
    folder = copy_of(clip, tmp_path)
    break_it(folder)
    with pytest.raises(DataError, match=message) as err:
        ClipEncoder.from_path(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_bad_inputs_are_refused(encoder):
    for texts in ([], "a bare string", [3]):
        with pytest.raises(DataError, match="non-empty list of sentences"):
            encoder.encode_texts(texts)
    for pixels in (torch.rand(3, 32, 32), torch.rand(1, 4, 32, 32), torch.rand(0, 3, 32, 32)):
        with pytest.raises(DataError, match=r"\(B, 3, H, W\)"):
            encoder.encode_images(pixels)


def test_a_users_clip_conditions_the_base_model_end_to_end(clip, tiny_fit_run, tmp_path, capsys):
    """`rodin train base --clip PATH`: z is the CLIP image embedding; portraits and edits run through it."""
    from rodin.cli.main import main
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.edit import EditDirections

    out = tmp_path / "model"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "base", "--triplanes", str(tiny_fit_run / "run"), "--out", str(out), "--preset", "tiny",
              "--steps", "3", "--clip", str(clip[0])])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    assert json.loads((out / "semantic" / "config.json").read_text())["kind"] == "clip-adapter"
    pipe = RodinPipeline.from_pretrained(out)
    assert isinstance(pipe.semantic, ClipEncoder) and pipe.base.latent_dim == 16
    portrait = next((tiny_fit_run / "data").glob("subject_*/portrait.png"))
    avatar = pipe(image=portrait, seed=0, steps=2)
    assert avatar.latent.shape == (16,) and torch.isfinite(avatar.planes).all()
    pipe._edits = EditDirections(pipe.semantic, min_similarity=-1.0)     # a random CLIP knows no attributes
    edited = pipe.edit(avatar, edit="with red hair", steps=2)
    assert not torch.equal(edited.latent, avatar.latent)
