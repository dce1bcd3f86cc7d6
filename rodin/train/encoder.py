"""`rodin train encoder`: the dual encoder, trained contrastively on portraits and captions.

Each step takes `batch` distinct training subjects, one augmented image of each (the portrait or a
view facing it) and one of its caption wordings; the loss is CLIP's symmetric cross-entropy over
the in-batch similarities, plus attribute probes on the image embedding. The sentence vectors of
the frozen text backbone are computed once (and cached in OUT) since they never change.

MODEL/semantic/          config.json + model.safetensors (EMA weights)
MODEL/encoder_metrics.json, MODEL/encoder_log.csv
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save

from rodin.config import DualEncoderConfig, EncoderTrainConfig
from rodin.errors import ConfigError, DataError
from rodin.io import remove_tree, write_atomic, write_json
from rodin.modeling import save_component
from rodin.semantic.dual_encoder import KIND, PROBED, DualEncoder
from rodin.semantic.portraits import PortraitSet, augment, load_portrait_set, on_white
from rodin.semantic.text import shared_embedder
from rodin.train.loop import (
    CHECKPOINT,
    TrainLog,
    check_finite,
    load_checkpoint,
    make_accelerator,
    micro_batches,
    save_checkpoint,
    step_generator,
    warmup_cosine,
)

SEMANTIC = "semantic"
LOG_FIELDS = ("step", "time", "loss", "contrastive", "probe", "lr", "step_s")


def sentence_vectors(texts: list[str], cache: Path, log: Callable[[str], None]) -> torch.Tensor:
    """Frozen backbone vectors of `texts`, cached in a file keyed by the texts themselves."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    if cache.is_file():
        stored = load_file(str(cache))
        if key in stored:
            return stored[key]
    log(f"embedding {len(texts)} captions with the frozen text backbone")
    vectors = shared_embedder()(texts)
    write_atomic(cache, save({key: vectors.contiguous()}))
    return vectors


def _caption_table(portraits: PortraitSet) -> tuple[list[str], torch.Tensor]:
    """All wordings flat, and (N, K) indices of each subject's wordings into that list."""
    flat, table = [], []
    for wordings in portraits.captions:
        table.append(list(range(len(flat), len(flat) + len(wordings))))
        flat.extend(wordings)
    return flat, torch.tensor(table)


def _probe_targets(portraits: PortraitSet) -> dict[str, torch.Tensor]:
    return {name: torch.tensor([classes.index(a[name]) if a.get(name) in classes else -100
                                for a in portraits.attributes]) for name, classes in PROBED.items()}


@torch.no_grad()
def evaluate_encoder(encoder: DualEncoder, portraits: PortraitSet, text_vectors: torch.Tensor,
                     table: torch.Tensor) -> dict:
    """Retrieval among held-out subjects (portrait on white vs. a wording it was not trained on) and
    probe accuracy per attribute."""
    encoder.eval()
    device = encoder.logit_scale.device
    images = encoder.encode_images(on_white(portraits.images[portraits.portrait_rows]))
    texts = encoder.project_sentences(text_vectors[table[:, -1]].to(device))
    sims = images @ texts.T
    target = torch.arange(len(images), device=device)
    figures = {
        "subjects": len(images),
        "image_to_text_top1": float((sims.argmax(1) == target).float().mean()),
        "text_to_image_top1": float((sims.argmax(0) == target).float().mean()),
    }
    targets = _probe_targets(portraits)
    for name, logits in encoder.probe(images).items():
        t = targets[name].to(device)
        known = t >= 0
        figures[f"probe_{name}"] = float((logits.argmax(1)[known] == t[known]).float().mean())
    return figures


def gather_batch(accelerator, tensor: torch.Tensor) -> torch.Tensor:
    """Every process's rows of a batch, in rank order, with gradients flowing back to their owners.

    The contrastive loss needs the whole batch as negatives, so each process computes it over the
    gathered batch; gradients summed back through the gather and averaged by DDP are then exactly
    those of one process holding the whole batch.
    """
    if accelerator.num_processes == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()))


def train_encoder(data: Path, out: Path, *, config: DualEncoderConfig, train: EncoderTrainConfig,
                  cpu: bool = False, mixed_precision: str | None = None, log: Callable[[str], None] = print,
                  show_progress: bool = True) -> dict:
    """Train (or resume) the dual encoder into OUT/semantic; returns held-out figures.

    One process or many under `accelerate launch`: each embeds its rows of the same global batch,
    the loss is taken over the gathered batch, and the main process writes."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identity = {"model": asdict(config), "train": asdict(train), "data": str(data)}
    identity = json.loads(json.dumps(identity))
    finished = out / "encoder_metrics.json"
    state = out / ".encoder_state"        # its own checkpoint: several stages train into one model folder
    if finished.is_file() and not (state / CHECKPOINT).exists() and (out / SEMANTIC / "config.json").is_file():
        record = json.loads(finished.read_text())
        if {k: record.get(k) for k in identity} == identity:
            log(f"{out / SEMANTIC} already holds this trained encoder; nothing to do")
            return record["figures"]
        raise ConfigError(f"{out}: holds an encoder trained with other settings; use another --out")

    accelerator = make_accelerator(cpu=cpu, mixed_precision=mixed_precision)
    main = accelerator.is_main_process
    if not main:
        log = lambda m: None  # noqa: E731 - one voice for N processes
    kwargs = dict(size=config.image_size, front_degrees=train.front_degrees,
                  captions_per_subject=train.captions_per_subject, seed=train.seed)
    training = load_portrait_set(data, split="train", **kwargs)
    try:
        heldout = load_portrait_set(data, split="heldout", **kwargs)
    except DataError:       # a tiny dataset may hold out fewer than 2 subjects: no held-out figures then
        heldout = None
    flat, table = _caption_table(training)
    held_flat, held_table = _caption_table(heldout) if heldout is not None else ([], None)
    with accelerator.main_process_first():  # the main process fills the cache; the others read it
        vectors = sentence_vectors(flat + held_flat, out / ".caption_vectors.safetensors", log)
    text_vectors, held_vectors = vectors[:len(flat)], vectors[len(flat):]
    targets = _probe_targets(training)
    subjects = len(training.ids)
    batch = min(train.batch, subjects)
    images_of = [torch.nonzero(training.owner == row).flatten() for row in range(subjects)]
    counts = torch.tensor([len(rows) for rows in images_of])
    offsets = torch.tensor([int(rows[0]) for rows in images_of])   # a subject's images are contiguous

    torch.manual_seed(train.seed)
    encoder = DualEncoder(config)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    ema = EMAModel(encoder.parameters(), decay=train.ema_decay)
    start = load_checkpoint(state, model=encoder, ema=ema, optimizer=optimizer, config=identity)
    if start:
        log(f"resuming from step {start}")
    encoder, optimizer = accelerator.prepare(encoder, optimizer)
    unwrapped = accelerator.unwrap_model(encoder)
    ema.to(accelerator.device)
    device = accelerator.device
    mine = micro_batches(batch, accelerator)[0]
    train_log = TrainLog(out / "encoder_log.csv", LOG_FIELDS)
    if main:
        train_log.truncate_after(start)
    t0, last, running = time.time(), time.time(), []
    bar = tqdm(range(start, train.steps), initial=start, total=train.steps, desc="train encoder", unit="step",
               disable=not (show_progress and main))
    encoder.train()
    for step in bar:
        g = step_generator(train.seed, step)
        rows = torch.randperm(subjects, generator=g)[:batch]
        pick = offsets[rows] + (torch.rand(batch, generator=g) * counts[rows]).long()
        wording = (torch.rand(batch, generator=g) * table.shape[1]).long()
        pixels = augment(training.images[pick], g)[mine].to(device)   # the whole batch's draws, this rank's rows
        sentences = text_vectors[table[rows, wording]][mine].to(device)
        lr = train.lr * warmup_cosine(step, warmup=train.warmup, total=train.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with accelerator.autocast():
            image_vectors, text_vectors_, probes = encoder(pixels, sentences)
        logits = unwrapped.contrastive_logits(gather_batch(accelerator, image_vectors.float()),
                                              gather_batch(accelerator, text_vectors_.float()))
        labels = torch.arange(batch, device=device)
        contrastive = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        probe = sum(F.cross_entropy(gather_batch(accelerator, probes[name].float()), targets[name][rows].to(device),
                                    ignore_index=-100) for name in PROBED) / len(PROBED)
        loss = contrastive + train.probe_weight * probe
        check_finite(loss, step, state)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        ema.step(unwrapped.parameters())
        running.append((loss.item(), contrastive.item(), probe.item()))
        done = step + 1
        bar.set_postfix(loss=f"{np.mean([r[0] for r in running[-25:]]):.3f}")
        if not main:
            continue
        if done % train.log_every == 0 or done == train.steps:
            now = time.time()
            means = np.mean(running, axis=0)
            train_log.append(step=done, time=round(now - t0, 1), loss=float(means[0]), contrastive=float(means[1]),
                             probe=float(means[2]), lr=lr, step_s=(now - last) / len(running))
            running, last = [], now
        if done % train.checkpoint_every == 0 and done < train.steps:
            save_checkpoint(state, model=unwrapped, ema=ema, optimizer=optimizer, step=done, config=identity)
    bar.close()
    accelerator.wait_for_everyone()
    ema.copy_to(unwrapped.parameters())
    if not main:
        return {"steps": train.steps, "train_subjects": subjects, "processes": accelerator.num_processes}
    figures = evaluate_encoder(unwrapped, heldout, held_vectors, held_table) if heldout is not None else {}
    figures.update(steps=train.steps, train_subjects=subjects, wall_s=round(time.time() - t0, 1),
                   processes=accelerator.num_processes)
    save_component(unwrapped.cpu(), out / SEMANTIC, kind=KIND, dtype=torch.float16)
    write_json(finished, {**identity, "figures": figures})
    remove_tree(state)
    return figures
