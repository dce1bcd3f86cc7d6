"""A user's own CLIP checkpoint as the semantic encoder (DESIGN.md, stage 5).

The paper's z is a frozen CLIP image embedding and its edits are CLIP text directions. No weights can be
downloaded here, so `ClipEncoder` reads a CLIP folder that the user already has on disk, in the Hugging
Face layout (config.json, model.safetensors, tokenizer files, preprocessor_config.json), e.g. a saved
`openai/clip-vit-base-patch32` or one of LAION's OpenCLIP models. Loading is offline and safetensors-only:
pickled weights can run code, so they are read only when the caller says `allow_pickle=True`.

A model that uses such an encoder stores a reference to the folder (`save_clip_reference`), never a copy
of its weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin.config import from_dict
from rodin.errors import ConfigError, DataError
from rodin.io import write_json
from rodin.semantic.space import normalise

KIND = "clip-adapter"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # OpenAI CLIP's normalisation, used when the folder has none
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BATCH = 64                                          # images or sentences per forward pass


@dataclass(frozen=True)
class ClipAdapterConfig:
    path: str = ""            # the user's local CLIP folder (Hugging Face layout), absolute


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except OSError as err:
        raise DataError(f"{path}: unreadable ({err.strerror})") from None


def _normalisation(folder: Path) -> tuple[Tensor, Tensor]:
    """(mean, std) of the folder's preprocessor_config.json, else CLIP's standard ones; each (1, 3, 1, 1)."""
    mean, std = CLIP_MEAN, CLIP_STD
    path = folder / "preprocessor_config.json"
    if path.is_file():
        raw = _read_json(path)
        if isinstance(raw, dict):
            mean, std = raw.get("image_mean", mean), raw.get("image_std", std)
        ok = all(isinstance(v, list | tuple) and len(v) == 3 and all(isinstance(x, int | float) for x in v)
                 for v in (mean, std))
        if not isinstance(raw, dict) or not ok or min(std) <= 0:
            raise DataError(f"{path}: image_mean and image_std must be 3 numbers each (std > 0)")
    return (torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
            torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))


def _check_folder(folder: Path, *, allow_pickle: bool) -> bool:
    """Refuse folders that cannot be a usable CLIP checkpoint; True when the weights are safetensors."""
    if not folder.exists():
        raise DataError(f"{folder}: CLIP folder not found (give the folder of a saved Hugging Face CLIP model)")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (give the folder of a saved Hugging Face CLIP model)")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise DataError(f"{config_path}: missing (a Hugging Face CLIP folder holds config.json and weights)")
    raw = _read_json(config_path)
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type != "clip":
        raise DataError(f"{config_path}: describes a {model_type!r} model, not CLIP (model_type 'clip'); "
                        "give the folder of a CLIP model")
    if not ((folder / "tokenizer.json").is_file() or
            ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
        raise DataError(f"{folder}: no tokenizer files (tokenizer.json, or vocab.json and merges.txt); "
                        "save the CLIP tokenizer into this folder")
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return True
    if not (folder / "pytorch_model.bin").is_file() and not (folder / "pytorch_model.bin.index.json").is_file():
        raise DataError(f"{folder}: no model.safetensors (the CLIP weights are missing)")
    if not allow_pickle:
        raise DataError(f"{folder}: only pickled weights (pytorch_model.bin), which can run code when loaded; "
                        "convert them to model.safetensors, or pass allow_pickle=True if you trust the file")
    return False


class ClipEncoder:
    """A frozen CLIP model: portraits and sentences into its joint space of unit vectors.

    Implements `rodin.semantic.space.SemanticEncoder`. Inference runs on the model's device and dtype
    (move it with `to`); embeddings come back as float32 on that device.
    """

    def __init__(self, config: ClipAdapterConfig, model: Any, tokenizer: Any, mean: Tensor, std: Tensor) -> None:
        self.config = config
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.mean, self.std = mean, std
        self.dim: int = model.config.projection_dim
        self.image_size: int = model.config.vision_config.image_size
        self.max_length: int = model.config.text_config.max_position_embeddings

    @classmethod
    def from_path(cls, path: Path | str, *, allow_pickle: bool = False) -> ClipEncoder:
        folder = Path(path).expanduser().absolute()
        safetensors = _check_folder(folder, allow_pickle=allow_pickle)
        mean, std = _normalisation(folder)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")      # a local folder only; never ask a hub
        from transformers import AutoTokenizer, CLIPModel

        try:
            model, info = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=safetensors,
                                                    dtype=torch.float32, ignore_mismatched_sizes=True,
                                                    output_loading_info=True)
        except Exception as err:  # safetensors, torch and transformers errors alike
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DataError(f"{folder}: unreadable CLIP weights ({reason})") from err
        if info["missing_keys"]:
            raise DataError(f"{folder}: the weights lack tensor {sorted(info['missing_keys'])[0]!r} that config.json "
                            "asks for; the folder mixes files from different models")
        if info["mismatched_keys"]:
            name, stored, wanted = sorted(info["mismatched_keys"])[0]
            raise DataError(f"{folder}: tensor {name!r} has shape {tuple(stored)} but config.json asks for "
                            f"{tuple(wanted)}; the folder mixes files from different models")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DataError(f"{folder}: unreadable tokenizer files ({reason})") from err
        if len(tokenizer) > model.config.text_config.vocab_size:
            raise DataError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but the text tower knows only "
                            f"{model.config.text_config.vocab_size}; the tokenizer belongs to another model")
        return cls(ClipAdapterConfig(path=str(folder)), model, tokenizer, mean, std)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, *args: Any, **kwargs: Any) -> ClipEncoder:
        """Move (or cast) the CLIP model, as `torch.nn.Module.to` does."""
        self.model.to(*args, **kwargs)
        return self

    def preprocess(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> the vision tower's input: centre square, resized (bicubic, antialiased)
        to image_size, normalised with the checkpoint's mean and std. Float32 on the input's device."""
        _check_pixels(pixels)
        x = pixels.float()
        height, width = x.shape[-2:]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        x = x[..., top:top + side, left:left + side]
        if side != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                              antialias=True).clamp(0.0, 1.0)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    @torch.no_grad()
    def encode_images(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1], background white -> (B, dim) unit vectors."""
        _check_pixels(pixels)
        self.model.eval()
        device, dtype = self.device, next(self.model.parameters()).dtype
        chunks = []
        for batch in pixels.split(BATCH):
            inputs = self.preprocess(batch.to(device)).to(dtype)
            chunks.append(_pooled(self.model.get_image_features(pixel_values=inputs)))
        return normalise(torch.cat(chunks))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        """B sentences -> (B, dim) unit vectors; sentences longer than the text tower reads are truncated."""
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise DataError(f"CLIP encodes a non-empty list of sentences, got {texts!r}")
        self.model.eval()
        chunks = []
        for start in range(0, len(texts), BATCH):
            tokens = self.tokenizer(list(texts[start:start + BATCH]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            chunks.append(_pooled(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                               attention_mask=tokens["attention_mask"])))
        return normalise(torch.cat(chunks))


def _check_pixels(pixels: Any) -> None:
    if not isinstance(pixels, Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3 or min(pixels.shape) < 1:
        shape = tuple(pixels.shape) if isinstance(pixels, Tensor) else type(pixels).__name__
        raise DataError(f"CLIP reads images as (B, 3, H, W) floats in [0, 1] with B >= 1, got {shape}")


def _pooled(output: Any) -> Tensor:
    """The projected embedding: transformers 4.x returns it as a tensor, 5.x as the output's pooler_output."""
    return output if isinstance(output, Tensor) else output.pooler_output


def save_clip_reference(encoder: ClipEncoder, folder: Path | str) -> None:
    """Record which CLIP folder a model uses (folder/config.json); the weights stay where they are."""
    write_json(Path(folder) / "config.json", {"kind": KIND, "config": asdict(encoder.config)})


def load_clip_reference(folder: Path | str, *, allow_pickle: bool = False) -> ClipEncoder:
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise DataError(f"{config_path}: missing (a CLIP reference folder holds config.json)")
    raw = _read_json(config_path)
    if not isinstance(raw, dict) or raw.get("kind") != KIND or "config" not in raw:
        raise ConfigError(f"{config_path}: not a {KIND} config (expected {{'kind': '{KIND}', 'config': {{...}}}})")
    try:
        config = from_dict(ClipAdapterConfig, raw["config"])
    except ConfigError as err:
        raise ConfigError(f"{config_path}: {err}") from None
    if not config.path or not Path(config.path).is_dir():
        raise DataError(f"{config_path}: the CLIP folder it refers to, {config.path!r}, is gone; put it back or "
                        "save the reference again with the folder's new path")
    return ClipEncoder.from_path(config.path, allow_pickle=allow_pickle)
