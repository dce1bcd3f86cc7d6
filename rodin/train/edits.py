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
from rodin.modeling import load_component, save_component

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
    from rodin.train.reader import labelled_portraits

    embeddings, attributes = labelled_portraits(data, semantic)
    if len(attributes) < 2:
        raise DataError(f"{data}: {len(attributes)} training subjects with a portrait and attributes.json; "
                        "labelled edit directions need a dataset made by `rodin data synth`")
    log(f"edits: read {len(attributes)} labelled portraits")
    limit = {} if min_subjects is None else {"min_subjects": min_subjects}
    return labelled_edits(embeddings, attributes, encoder_digest=digest, **limit)


def measure_edits(data: Path | str, model: Path | str, *, min_subjects: int | None = None, strict: bool = True,
                  triplanes: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Write MODEL/edits from the labelled training portraits of `data`, with plane directions from the fit
    run `triplanes` if given (`add_plane_edits`); returns what was measured. With no phrase measurable (too
    few portraits on some side of every attribute) nothing is written. Data without labelled portraits is a
    DataError, or with `strict=False` (after training an encoder, whose data may be another renderer's) a
    logged skip. MODEL/edits is written once, after everything was measured."""
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
    dtype = None
    if triplanes is not None:
        edits, planes = _with_plane_directions(edits, model, Path(triplanes), log=log)
        figures.update(planes)
        dtype = torch.float16
    save_component(edits, model / EDITS, kind=KIND, dtype=dtype)
    index = model / "model_index.json"
    if index.is_file():      # otherwise `rodin train base` writes the index and lists this folder
        raw = json.loads(index.read_text())
        raw.setdefault("components", {})[EDITS] = EDITS
        write_json(index, raw)
    log(f"edits: {known} of {len(edits.config.phrases)} phrases measured")
    return figures


def add_plane_edits(model: Path | str, run: Path | str, *, data: Path | None = None,
                    min_subjects: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Give MODEL/edits plane directions measured on the training subjects of the fit run RUN (the one the
    base model was trained on; their labels from its dataset), at the base model's resolution."""
    from rodin.semantic.edit import LabelledEdits, LabelledEditsConfig

    model = Path(model)
    if not (model / EDITS / "config.json").is_file():
        raise DataError(f"{model}: no labelled edits (MODEL/edits) to add plane directions to; measure them "
                        "first with `rodin train edits --data DATA`")
    edits = load_component(LabelledEdits, LabelledEditsConfig, model / EDITS, kind=KIND)
    edits, figures = _with_plane_directions(edits, model, Path(run), data=data, min_subjects=min_subjects, log=log)
    save_component(edits, model / EDITS, kind=KIND, dtype=torch.float16)
    return figures


def _with_plane_directions(edits, model: Path, run: Path, *, data: Path | None = None,
                           min_subjects: int | None = None, chunk: int = 64, log: Callable[[str], None] = print):
    """(`edits` with plane directions measured on RUN's training subjects, figures)."""
    from rodin.config import BaseModelConfig
    from rodin.diffusion.base import KIND as BASE_KIND
    from rodin.diffusion.base import BaseDiffusion
    from rodin.fit.store import TriplaneStore
    from rodin.semantic.edit import plane_edits
    from rodin.train.base import data_folder, load_plane_sets
    from rodin.triplane.triplane import resize_planes

    store = TriplaneStore.open(run / "triplanes")
    base = load_component(BaseDiffusion, BaseModelConfig, model / "base", kind=BASE_KIND)
    if store.planes.shape[2] != base.config.unet.channels:
        raise DataError(f"{run}: its tri-planes have {store.planes.shape[2]} channels, the base model reads "
                        f"{base.config.unet.channels}; give the fit run the base was trained on")
    dataset = data_folder(run, data)
    rows, _ = load_plane_sets(store)

    def chunks():
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            labels = []
            for i in part:
                path = dataset / store.ids[i] / "attributes.json"
                try:
                    labels.append(json.loads(path.read_text()))
                except (OSError, ValueError):
                    raise DataError(f"{path}: missing or not valid JSON; plane directions need the labels of "
                                    "`rodin data synth`") from None
            yield resize_planes(store.get(part).float(), base.config.unet.resolution), labels

    measured = plane_edits(edits, chunks(), **({} if min_subjects is None else {"min_subjects": min_subjects}))
    known = int((measured.plane_directions.flatten(1).abs().sum(1) > 0).sum())
    log(f"edits: plane directions of {known} phrases from {len(rows)} fitted subjects")
    return measured, {"plane_subjects": len(rows), "plane_measured": known}


__all__ = ["EDITS", "KIND", "add_plane_edits", "edits_from_data", "encoder_digest", "measure_edits"]
