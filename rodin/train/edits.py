"""Measure the labelled edit directions of a model (`rodin.semantic.edit.LabelledEdits`) and write MODEL/edits.

Nothing is trained: the training split's portraits are read by the model's semantic encoder, as
`RodinPipeline.encode_image` reads a user's portrait, and each known phrase gets the difference of the
mean embeddings of the portraits that have what it names and those that do not. Needs a dataset
whose subjects carry attributes.json (`rodin data synth`); a model without this folder edits along raw
text directions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from rodin.errors import DataError
from rodin.io import write_json
from rodin.modeling import save_component

EDITS = "edits"
KIND = "labelled-edits"


def encoder_digest(folder: Path | str) -> str:
    """sha256 over a semantic component folder's files (names and bytes), to tell when it changed."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@torch.no_grad()
def edits_from_data(data: Path | str, semantic, *, digest: str = "", min_subjects: int | None = None,
                    log: Callable[[str], None] = print):
    """`LabelledEdits` of the encoder `semantic` from the labelled training portraits of `data`."""
    from rodin.semantic.edit import labelled_edits
    from rodin.semantic.face import prepare_portrait
    from rodin.semantic.judge import dataset_subjects

    pixels, attributes = [], []
    for folder, split in dataset_subjects(data):
        labels = folder / "attributes.json"
        if split != "train" or not labels.is_file() or not (folder / "portrait.png").is_file():
            continue
        try:
            attributes.append(json.loads(labels.read_text()))
        except ValueError:
            raise DataError(f"{labels}: not valid JSON; regenerate the dataset") from None
        pixels.append(prepare_portrait(folder / "portrait.png", size=semantic.image_size).pixels)
    if len(attributes) < 2:
        raise DataError(f"{data}: {len(attributes)} training subjects with a portrait and attributes.json; "
                        "labelled edit directions need a dataset made by `rodin data synth`")
    log(f"edits: reading {len(attributes)} labelled portraits")
    embeddings = torch.cat([semantic.encode_images(torch.stack(pixels[k:k + 64])).float().cpu()
                            for k in range(0, len(pixels), 64)])
    limit = {} if min_subjects is None else {"min_subjects": min_subjects}
    return labelled_edits(embeddings, attributes, encoder_digest=digest, **limit)


def measure_edits(data: Path | str, model: Path | str, *, min_subjects: int | None = None, strict: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    """Write MODEL/edits from the labelled training portraits of `data`; returns what was measured. With
    no phrase measurable (too few portraits on some side of every attribute) nothing is written. Data
    without labelled portraits is a DataError, or with `strict=False` (after training an encoder, whose
    data may be another renderer's) a logged skip."""
    from rodin.semantic.loading import load_semantic
    from rodin.train.encoder import SEMANTIC

    model = Path(model)
    if not Path(data).is_dir():          # before the encoder loads, so the message names the real problem
        raise DataError(f"{data}: no such dataset folder")
    semantic = load_semantic(model / SEMANTIC)
    try:
        edits = edits_from_data(data, semantic, digest=encoder_digest(model / SEMANTIC),
                                min_subjects=min_subjects, log=log)
    except DataError as err:
        if strict:
            raise
        log(f"edits: not measured ({err}); edits follow raw text directions")
        return {"subjects": 0, "phrases": 0, "measured": 0}
    known = int(edits.known.sum())
    figures = {"subjects": edits.config.subjects, "phrases": len(edits.config.phrases), "measured": known}
    if known == 0:
        log("edits: no attribute had enough portraits on both sides; edits follow raw text directions")
        return figures
    save_component(edits, model / EDITS, kind=KIND)
    index = model / "model_index.json"
    if index.is_file():      # otherwise `rodin train base` writes the index and lists this folder
        raw = json.loads(index.read_text())
        raw.setdefault("components", {})[EDITS] = EDITS
        write_json(index, raw)
    log(f"edits: {known} of {len(edits.config.phrases)} phrases measured")
    return figures


__all__ = ["EDITS", "KIND", "edits_from_data", "encoder_digest", "measure_edits"]
