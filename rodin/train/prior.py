"""`rodin train prior`: the latent prior, trained on (caption, z) pairs of the training subjects.

z of a subject is the image embedding of its portrait (what the base model is conditioned on); the
condition is the text embedding of one of its caption wordings, dropped to the null vector for
`latent_dropout` of the examples so that the same model also draws z unconditionally.

MODEL/prior/    config.json + model.safetensors (EMA weights)
MODEL/prior_metrics.json, MODEL/prior_log.csv
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers.training_utils import EMAModel

from rodin.config import EncoderTrainConfig, PriorConfig, TrainConfig
from rodin.diffusion.prior import KIND, LatentPrior
from rodin.errors import ConfigError, DataError
from rodin.io import remove_tree, write_json
from rodin.modeling import save_component
from rodin.semantic.portraits import PortraitSet, load_portrait_set, on_white
from rodin.semantic.space import SemanticEncoder, latent_from_embedding
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

PRIOR = "prior"
LOG_FIELDS = ("step", "time", "loss", "lr", "step_s")


def resize_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    if pixels.shape[-1] == size:
        return pixels
    return torch.nn.functional.interpolate(pixels, size=(size, size), mode="area" if pixels.shape[-1] > size
                                           else "bilinear", align_corners=None if pixels.shape[-1] > size else False)


@torch.no_grad()
def portrait_latents(encoder: SemanticEncoder, portraits: PortraitSet, *, batch: int = 256) -> torch.Tensor:
    """z (N, dim) of each subject's portrait, composited on white."""
    chunks = []
    rows = portraits.portrait_rows
    for start in range(0, len(rows), batch):
        pixels = resize_pixels(on_white(portraits.images[rows[start:start + batch]]), encoder.image_size)
        chunks.append(latent_from_embedding(encoder.encode_images(pixels).cpu()))
    return torch.cat(chunks)


@torch.no_grad()
def caption_embeddings(encoder: SemanticEncoder, sets: list[PortraitSet], cache: Path,
                       log: Callable[[str], None]) -> list[torch.Tensor]:
    """(N, K, dim) unit text embeddings of every wording of every subject, per set. With our dual
    encoder the frozen backbone's vectors come from the cache its training left (same captions)."""
    flats = [[text for wordings in p.captions for text in wordings] for p in sets]
    everything = [text for flat in flats for text in flat]
    if hasattr(encoder, "project_sentences"):
        from rodin.train.encoder import sentence_vectors

        vectors = encoder.project_sentences(sentence_vectors(everything, cache, log)).cpu()
    else:
        vectors = encoder.encode_texts(everything).cpu()
    out, start = [], 0
    for p, flat in zip(sets, flats):
        out.append(vectors[start:start + len(flat)].view(len(p.captions), -1, vectors.shape[-1]))
        start += len(flat)
    return out


@torch.no_grad()
def evaluate_prior(prior: LatentPrior, latents: torch.Tensor, texts: torch.Tensor, *, seed: int) -> dict:
    """Cosine between z drawn for a caption and the z of the subject it describes, against z drawn
    for nothing: how much the caption pins z down."""
    g = torch.Generator().manual_seed(seed + 777)
    drawn = prior.sample(texts[:, -1], generator=g)
    free = prior.sample(None, count=len(latents), generator=g)
    truth = torch.nn.functional.normalize(latents, dim=-1)
    cos = lambda a: float((torch.nn.functional.normalize(a, dim=-1) * truth).sum(-1).mean())  # noqa: E731
    return {"subjects": len(latents), "text_cosine": cos(drawn), "unconditional_cosine": cos(free)}


def train_prior(data: Path, out: Path, *, encoder: SemanticEncoder, config: PriorConfig, train: TrainConfig,
                portraits: EncoderTrainConfig, cpu: bool = False, mixed_precision: str | None = None,
                grad_accum: int = 1, log: Callable[[str], None] = print, show_progress: bool = True) -> dict:
    """Train (or resume) the prior into OUT/prior; returns held-out figures.

    As `train_base`: one process or many under `accelerate launch`, each training on its rows of the
    same global batch (same weights whatever the number of processes); the main process writes.
    """
    from tqdm import tqdm

    out = Path(out)
    if config.dim != encoder.dim:
        raise ConfigError(f"the prior's dim {config.dim} differs from the encoder's {encoder.dim}")
    identity = json.loads(json.dumps({"model": asdict(config), "train": asdict(train), "data": str(data)}))
    finished = out / "prior_metrics.json"
    state = out / ".prior_state"        # its own checkpoint: several stages train into one model folder
    if finished.is_file() and not (state / CHECKPOINT).exists() and (out / PRIOR / "config.json").is_file():
        record = json.loads(finished.read_text())
        if {k: record.get(k) for k in identity} == identity:
            log(f"{out / PRIOR} already holds this trained prior; nothing to do")
            return record["figures"]
        raise ConfigError(f"{out}: holds a prior trained with other settings; use another --out")
    kwargs = dict(size=max(encoder.image_size, 64), front_degrees=0.0,
                  captions_per_subject=portraits.captions_per_subject, seed=portraits.seed)
    accelerator = make_accelerator(cpu=cpu, mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum)
    if not accelerator.is_main_process:
        log = lambda m: None  # noqa: E731 - one voice for N processes
    log("embedding portraits and captions")
    training = load_portrait_set(data, split="train", **kwargs)
    try:
        heldout = load_portrait_set(data, split="heldout", **kwargs)
    except DataError:       # a tiny dataset may hold out fewer than 2 subjects: no held-out figures then
        heldout = None
    sets = [training] + ([heldout] if heldout is not None else [])
    with accelerator.main_process_first():  # the main process fills the caption cache; the others read it
        embedded = caption_embeddings(encoder, sets, out / ".caption_vectors.safetensors", log)
    latents, texts = portrait_latents(encoder, training), embedded[0]
    held = (portrait_latents(encoder, heldout), embedded[1]) if heldout is not None else None

    torch.manual_seed(train.seed)
    prior = LatentPrior(config)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    ema = EMAModel(prior.parameters(), decay=train.ema_decay)
    out.mkdir(parents=True, exist_ok=True)
    start = load_checkpoint(state, model=prior, ema=ema, optimizer=optimizer, config=identity)
    if start:
        log(f"resuming from step {start}")
    prior_model, optimizer = accelerator.prepare(prior, optimizer)
    unwrapped = accelerator.unwrap_model(prior_model)
    ema.to(accelerator.device)
    device = accelerator.device
    parts = micro_batches(train.batch, accelerator)
    main = accelerator.is_main_process
    train_log = TrainLog(out / "prior_log.csv", LOG_FIELDS)
    if main:
        train_log.truncate_after(start)
    n, k = texts.shape[:2]
    scheduler = unwrapped.noise
    t0, last, running = time.time(), time.time(), []
    bar = tqdm(range(start, train.steps), initial=start, total=train.steps, desc="train prior", unit="step",
               disable=not (show_progress and main))
    prior_model.train()
    for step in bar:
        g = step_generator(train.seed, step)
        rows = torch.randint(n, (train.batch,), generator=g)
        wording = torch.randint(k, (train.batch,), generator=g)
        keep = (torch.rand(train.batch, generator=g) >= config.diffusion.latent_dropout).float()[:, None]
        noise = torch.randn(train.batch, config.dim, generator=g)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (train.batch,), generator=g)
        lr = train.lr * warmup_cosine(step, warmup=train.warmup, total=train.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = []
        for mine in parts:
            with accelerator.accumulate(prior_model):
                clean, t = latents[rows[mine]].to(device), timesteps[mine].to(device)
                noisy = scheduler.add_noise(clean, noise[mine].to(device), t)
                # Through the prepared (DDP) module, so that gradients are averaged across processes.
                predicted = prior_model(noisy, t, (texts[rows[mine], wording[mine]] * keep[mine]).to(device))
                loss = torch.nn.functional.mse_loss(predicted.float(), clean)
                check_finite(loss, step, state)
                accelerator.backward(loss)
                if train.grad_clip > 0 and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(prior_model.parameters(), train.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        ema.step(unwrapped.parameters())
        running.append(accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item())
        done = step + 1
        bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
        if not main:
            continue
        if done % train.log_every == 0 or done == train.steps:
            now = time.time()
            train_log.append(step=done, time=round(now - t0, 1), loss=float(np.mean(running)), lr=lr,
                             step_s=(now - last) / len(running))
            running, last = [], now
        if done % train.checkpoint_every == 0 and done < train.steps:
            save_checkpoint(state, model=unwrapped, ema=ema, optimizer=optimizer, step=done, config=identity)
    bar.close()
    accelerator.wait_for_everyone()
    ema.copy_to(unwrapped.parameters())
    unwrapped.eval()
    figures = {"steps": train.steps, "train_subjects": n, "wall_s": round(time.time() - t0, 1),
               "processes": accelerator.num_processes}
    if not main:
        return figures
    figures = {**(evaluate_prior(unwrapped, *held, seed=train.seed) if held is not None else {}), **figures}
    save_component(unwrapped.cpu(), out / PRIOR, kind=KIND)
    write_json(finished, {**identity, "figures": figures})
    remove_tree(state)
    return figures
