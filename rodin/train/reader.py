"""Train a model's prompt reader and fill its bank (MODEL/reader; `rodin.semantic.prompt_reader`).

The reader learns from captions the generator writes for random attributes, whole and naming 1-4
attributes, each recording what it names (`rodin.data.avatar.described`): no rendering, no dataset. The
frozen backbone's token states are computed once, so the training itself is a small classifier over
cached features (a minute on 2 cores). The bank is the training split of DATA: its portraits read by the
model's semantic encoder, as `RodinPipeline.encode_image` reads a user's, and their attributes.json.

`add_value_planes` (`rodin train steering`) gives a trained reader the value planes prompts are steered by:
per value, the mean tri-plane of a fit run's training subjects that have it, at the base model's side.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from rodin.config import ReaderTrainConfig
from rodin.errors import DataError
from rodin.io import write_json
from rodin.modeling import save_component

READER = "reader"
KIND = "prompt-reader"
MENTIONS = (None, 1, 1, 2, 2, 3, 3, 4)     # whole captions, and prompts naming a few attributes
__all__ = ["KIND", "READER", "ReaderTrainConfig", "add_value_planes", "reader_captions", "train_reader"]


def reader_captions(count: int, *, seed: int = 0, share: float = 0.5) -> list[tuple[str, dict[str, str]]]:
    """`count` (caption, what it names) pairs of random avatars: the generator's captions, whole or naming a
    few attributes, and (a `reworded` share) prompts saying a few attributes in other words."""
    from rodin.data.avatar import described, sample_attributes
    from rodin.train.reader_wording import reworded

    rng = random.Random(f"rodin-reader/{seed}")
    out = []
    for _ in range(count):
        attrs = sample_attributes(rng.randrange(2**31))
        if rng.random() < share:
            out.append(reworded(attrs, rng))
        else:
            out.append(described(attrs, rng, mentions=rng.choice(MENTIONS)))
    return out


@torch.no_grad()
def labelled_portraits(data: Path | str, semantic) -> tuple[torch.Tensor, list[dict]]:
    """(embeddings (N, dim), attributes) of the training split's portraits of `data`, read by `semantic`."""
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
    if not pixels:
        return torch.zeros(0, semantic.dim), []
    embeddings = torch.cat([semantic.encode_images(torch.stack(pixels[k:k + 64])).float().cpu()
                            for k in range(0, len(pixels), 64)])
    return embeddings, attributes


def _chunks(captions: list[tuple[str, dict[str, str]]], table: dict, batch: int) -> list[tuple]:
    """Cached (token states in half precision, mask, targets) per batch of captions."""
    from rodin.semantic.prompt_reader import attribute_targets
    from rodin.semantic.text import shared_embedder

    embedder = shared_embedder()
    chunks = []
    for start in range(0, len(captions) - batch + 1, batch):
        part = captions[start:start + batch]
        states, mask = embedder.token_states([text for text, _ in part])
        chunks.append((states.half(), mask, attribute_targets([named for _, named in part], table)))
    return chunks


def _scores(reader, chunks: list[tuple]) -> dict:
    """Exact accuracy per attribute (value or "not said"), and how often a named attribute is read as
    named with the right value."""
    right = torch.zeros(len(reader.names))
    named_right = named = total = 0
    with torch.no_grad():
        for states, mask, targets in chunks:
            guesses = torch.stack([lg.argmax(-1) for lg in reader(states.float(), mask)], 1)
            right += (guesses == targets).float().sum(0)
            unsaid = torch.tensor([len(reader.table[n]) for n in reader.names])
            is_named = targets != unsaid
            named += int(is_named.sum())
            named_right += int((is_named & (guesses == targets)).sum())
            total += len(targets)
    per = {name: float(r / total) for name, r in zip(reader.names, right)}
    return {"heldout_exact": float(right.sum() / (total * len(reader.names))),
            "heldout_named_recall": named_right / max(named, 1), "heldout_per_attribute": per}


def train_reader(data: Path | str, model: Path | str, *, train: ReaderTrainConfig = ReaderTrainConfig(),
                 draws: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Write MODEL/reader: a prompt reader trained on generated captions and a bank of DATA's training
    portraits read by MODEL's semantic encoder. Returns the figures; nothing is written on failure."""
    from rodin.pipeline import INDEX
    from rodin.semantic.loading import load_semantic
    from rodin.semantic.prompt_reader import PromptReader, PromptReaderConfig, bank_codes
    from rodin.semantic.space import latent_from_embedding
    from rodin.train.edits import encoder_digest
    from rodin.train.encoder import SEMANTIC

    model = Path(model)
    if not Path(data).is_dir():
        raise DataError(f"{data}: no such dataset folder")
    if not (model / SEMANTIC).is_dir():
        raise DataError(f"{model}: no semantic encoder (MODEL/{SEMANTIC}); train one with `rodin train encoder`")
    semantic = load_semantic(model / SEMANTIC)
    started = time.perf_counter()
    embeddings, attributes = labelled_portraits(data, semantic)
    if len(attributes) < 2:
        raise DataError(f"{data}: {len(attributes)} training subjects with a portrait and attributes.json; "
                        "the reader's bank needs a dataset made by `rodin data synth`")
    log(f"reader: {len(attributes)} portraits in the bank")
    config = PromptReaderConfig(dim=semantic.dim, bank=len(attributes), encoder_digest=encoder_digest(model / SEMANTIC))
    if draws is not None:
        config = replace(config, draws=draws)
    torch.manual_seed(train.seed)
    reader = PromptReader(config)
    reader.bank_latents.copy_(latent_from_embedding(embeddings))
    reader.bank_codes.copy_(bank_codes(attributes, reader.table))

    log(f"reader: reading {train.captions} generated captions with the sentence backbone")
    chunks = _chunks(reader_captions(train.captions, seed=train.seed, share=train.reworded), reader.table,
                     train.batch)
    held = max(1, len(chunks) // 20)
    fitting, heldout = chunks[held:], chunks[:held]
    optimiser = torch.optim.AdamW(reader.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=train.lr, total_steps=train.steps,
                                                   pct_start=0.05)
    order = torch.Generator().manual_seed(train.seed)
    reader.train()
    for step in range(train.steps):
        states, mask, targets = fitting[int(torch.randint(len(fitting), (1,), generator=order))]
        if train.token_dropout:
            mask = mask & (torch.rand(mask.shape, generator=order) >= train.token_dropout)
            mask[:, 0] = True       # the [CLS] token stays, so no caption is hidden whole
        logits = reader(states.float(), mask)
        loss = sum(torch.nn.functional.cross_entropy(lg, targets[:, i]) for i, lg in enumerate(logits)) / len(logits)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if (step + 1) % 250 == 0 or step + 1 == train.steps:
            log(f"reader: step {step + 1}/{train.steps} loss {loss.item():.4f}")
    reader.eval()
    figures = _scores(reader, heldout)
    figures.update(bank=len(attributes), captions=train.captions, steps=train.steps,
                   seconds=round(time.perf_counter() - started, 1))
    save_component(reader, model / READER, kind=KIND)
    index = model / INDEX
    if index.is_file():      # otherwise `rodin train base` writes the index and lists this folder
        raw = json.loads(index.read_text())
        raw.setdefault("components", {})[READER] = READER
        write_json(index, raw)
    log(f"reader: held-out captions read {figures['heldout_exact']:.3f} exactly, named attributes "
        f"{figures['heldout_named_recall']:.3f}")
    return figures


@torch.no_grad()
def add_value_planes(model: Path | str, run: Path | str, *, data: Path | None = None, chunk: int = 64,
                     log: Callable[[str], None] = print) -> dict:
    """Give MODEL/reader value planes measured on the training subjects of the fit run RUN (the one MODEL's
    base model was trained on), resized to the base model's side; the reader's classifiers and bank are
    unchanged. Returns what was measured; nothing is written on failure."""
    from rodin.config import BaseModelConfig
    from rodin.diffusion.base import KIND as BASE_KIND
    from rodin.diffusion.base import BaseDiffusion
    from rodin.fit.store import TriplaneStore
    from rodin.modeling import load_component
    from rodin.semantic.prompt_reader import PromptReader, PromptReaderConfig
    from rodin.train.base import data_folder, load_plane_sets
    from rodin.triplane.triplane import resize_planes

    model, run = Path(model), Path(run)
    if not (model / READER / "config.json").is_file():
        raise DataError(f"{model}: no prompt reader (MODEL/{READER}); train one with `rodin train reader`")
    if not (model / "base" / "config.json").is_file():
        raise DataError(f"{model}: no base model (MODEL/base); value planes are measured at its side")
    reader = load_component(PromptReader, PromptReaderConfig, model / READER, kind=KIND)
    base = load_component(BaseDiffusion, BaseModelConfig, model / "base", kind=BASE_KIND)
    store = TriplaneStore.open(run / "triplanes")
    channels, side = base.config.unet.channels, base.config.unet.resolution
    if store.planes.shape[2] != channels:
        raise DataError(f"{run}: its tri-planes have {store.planes.shape[2]} channels, the base model reads "
                        f"{channels}; give the fit run the base was trained on")
    dataset = data_folder(run, data)
    rows, _ = load_plane_sets(store)
    words = reader.config.vocabulary
    sums = torch.zeros(len(words), 3, channels, side, side, dtype=torch.float64)
    counts = torch.zeros(len(words), dtype=torch.long)
    total = torch.zeros(3, channels, side, side, dtype=torch.float64)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        planes = resize_planes(store.get(part).float(), side).double()
        total += planes.sum(0)
        for k, i in enumerate(part):
            path = dataset / store.ids[i] / "attributes.json"
            try:
                attrs = json.loads(path.read_text())
            except (OSError, ValueError):
                raise DataError(f"{path}: missing or not valid JSON; value planes need the labels of "
                                "`rodin data synth`") from None
            for w, word in enumerate(words):
                name, _, value = word.partition("=")
                if attrs.get(name) == value:
                    sums[w] += planes[k]
                    counts[w] += 1
    config = replace(reader.config, plane_shape=(3, channels, side, side), plane_subjects=len(rows))
    out = PromptReader(config)
    out.load_state_dict(reader.state_dict(), strict=False)
    out.value_planes.copy_((sums / counts.clamp_min(1)[:, None, None, None, None]).half())
    out.value_counts.copy_(counts)
    out.planes_mean.copy_((total / len(rows)).float())
    save_component(out.eval(), model / READER, kind=KIND)
    measured = sum(out.value_means(*word.split("=", 1)) is not None for word in words)
    log(f"reader: value planes of {measured} of {len(words)} values from {len(rows)} fitted subjects")
    return {"plane_subjects": len(rows), "values_measured": measured, "values": len(words)}
