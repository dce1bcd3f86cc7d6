"""The base model's text head: a ridge regression of the training subjects' planes on the text embeddings
of their captions, used for prompts in place of the mean-planes head's planes.

Why: z drawn by the latent prior for a prompt carries less of what the prompt names than the prompt's own
text embedding does (BENCHMARKS.md, "Where a prompt's attributes get lost"), and the mean-planes head can
only draw what z carries. A linear map from the text embedding to the planes skips that loss; the UNet
still reads the prior's z. Each subject contributes one row per whole-caption wording (the wordings the
encoder and the prior learn from); the penalty is chosen on every tenth subject, all of its wordings held
apart together.

`rodin train base` fits it before the first step when `BaseModelConfig.text_head` is on; `rodin train
text-head` adds one to a model whose base was trained without it (the UNet is unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from rodin.config import BaseModelConfig
from rodin.diffusion.base import KIND as BASE_KIND
from rodin.diffusion.base import BaseDiffusion
from rodin.diffusion.mean_planes import RidgeSums, fit_ridge
from rodin.errors import DataError
from rodin.fit.store import TriplaneStore
from rodin.modeling import load_component, save_component
from rodin.semantic.portraits import load_portrait_set
from rodin.triplane.triplane import resize_planes

WORDINGS = 8            # whole-caption wordings per subject (the encoder's own)
CACHE = ".caption_vectors.safetensors"


def caption_texts(encoder, dataset: Path, ids: list[str], cache: Path,
                  log: Callable[[str], None]) -> torch.Tensor:
    """(N, WORDINGS, D) unit text embeddings of the whole captions of the subjects `ids` (training ones)."""
    from rodin.train.prior import caption_embeddings

    texts = load_portrait_set(dataset, split="train", size=64, front_degrees=0.0, captions_per_subject=WORDINGS)
    where = {sid: k for k, sid in enumerate(texts.ids)}
    missing = [sid for sid in ids if sid not in where]
    if missing:
        raise DataError(f"{dataset}: training subject {missing[0]!r} of the fit run has no captions here")
    embedded = caption_embeddings(encoder, [texts], cache, log)[0]
    return embedded[torch.tensor([where[sid] for sid in ids])]


@torch.no_grad()
def fit_planes_head(model: BaseDiffusion, head, store: TriplaneStore, rows: list[int], features: torch.Tensor, *,
                    chunk: int = 64) -> float:
    """Set the linear `head` (a `MeanPlanes`) of `model` to the ridge regression of the normalised roll-outs
    of `rows` on `features` (N, K, D): K rows per subject (its z, or its captions' embeddings), in two
    streamed passes over the store (the mean, then the sums); the penalty is chosen on every tenth subject,
    all K of its rows together. The head is frozen (the closed form is its own loss's optimum); returns the
    penalty."""
    resolution = model.config.unet.resolution
    parts = [list(range(i, min(i + chunk, len(rows)))) for i in range(0, len(rows), chunk)]

    def rolled(part: list[int]) -> torch.Tensor:
        return model.normalise(resize_planes(store.get([rows[i] for i in part]).float(), resolution))

    mean = sum(rolled(part).sum(0) for part in parts) / len(rows)
    sums = RidgeSums(mean)
    per = features.shape[1]
    for part in parts:
        subjects = torch.tensor(part).repeat_interleave(per)
        sums.add(features[part].flatten(0, 1).float(), rolled(part).repeat_interleave(per, dim=0),
                 check=subjects % sums.every == 0)
    penalty = fit_ridge(head, sums)
    head.requires_grad_(False)
    return penalty


def fit_text_head(model: BaseDiffusion, store: TriplaneStore, rows: list[int], texts: torch.Tensor) -> float:
    """Set `model.text_planes` to the ridge regression of the roll-outs of `rows` on `texts` (N, K, D), one
    row per wording; returns the penalty chosen."""
    if model.text_planes is None:
        raise ValueError("the model has no text head (BaseModelConfig.text_head)")
    return fit_planes_head(model, model.text_planes, store, rows, texts)


def add_text_head(model_dir: Path, run: Path, *, dataset: Path, log: Callable[[str], None] = print) -> dict:
    """Give MODEL/base a text head fitted on RUN's training subjects (the fit the base was trained on) and
    DATASET's captions, keeping every other weight; MODEL/base is rewritten atomically."""
    from rodin.semantic.loading import load_semantic
    from rodin.train.base import load_plane_sets

    model_dir, run = Path(model_dir), Path(run)
    base = load_component(BaseDiffusion, BaseModelConfig, model_dir / "base", kind=BASE_KIND)
    if base.mean_planes is None:
        raise DataError(f"{model_dir / 'base'}: a base model without the mean-planes head cannot read a text "
                        "head's planes; train one with --mean-planes")
    if not (model_dir / "semantic" / "config.json").is_file():
        raise DataError(f"{model_dir}: no semantic encoder (MODEL/semantic) to embed the captions with")
    encoder = load_semantic(model_dir / "semantic")
    store = TriplaneStore.open(run / "triplanes")
    unet = base.config.unet
    if store.planes.shape[2] != unet.channels:
        raise DataError(f"{run}: its tri-planes have {store.planes.shape[2]} channels, the base model reads "
                        f"{unet.channels}; give the fit run the base was trained on")
    train_rows, _ = load_plane_sets(store)
    texts = caption_texts(encoder, dataset, [store.ids[i] for i in train_rows], model_dir / CACHE, log)
    model = BaseDiffusion(replace(base.config, text_head=True))
    loaded = model.load_state_dict(base.state_dict(), strict=False)
    assert not loaded.unexpected_keys and all(k.startswith("text_planes.") for k in loaded.missing_keys), loaded
    penalty = fit_text_head(model, store, train_rows, texts)
    log(f"text head: ridge regression on {len(train_rows)} subjects x {texts.shape[1]} captions "
        f"(penalty {penalty:g})")
    save_component(model, model_dir / "base", kind=BASE_KIND, dtype=torch.float16)
    return {"train_subjects": len(train_rows), "wordings": texts.shape[1], "penalty": penalty}
