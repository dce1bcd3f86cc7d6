"""`rodin train prior`: the latent prior, trained on (caption, z) pairs of the training subjects.

z of a subject is the image embedding of its portrait (what the base model is conditioned on); the
condition is the text embedding of one of its caption wordings (whole, or naming only a few of its
attributes: `PriorConfig.partial_captions`), dropped to the null vector for `latent_dropout` of the
examples so that the same model also draws z unconditionally.

MODEL/prior/    config.json + model.safetensors (EMA weights)
MODEL/prior_metrics.json, MODEL/prior_log.csv
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rodin.config import EncoderTrainConfig, PriorConfig, TrainConfig
from rodin.diffusion.prior import KIND, LatentPrior
from rodin.errors import ConfigError, DataError
from rodin.io import remove_tree, write_json
from rodin.modeling import save_component
from rodin.semantic.portraits import PortraitSet, load_portrait_set, on_white
from rodin.semantic.space import SemanticEncoder, latent_from_embedding
from rodin.train.loop import CHECKPOINT, make_accelerator, step_generator
from rodin.train.sharding import check_fsdp
from rodin.train.steps import state_folder, train_steps

PRIOR = "prior"


@dataclass
class PriorBatch:
    """One step's draws for the whole global batch."""

    rows: torch.Tensor         # (B,) training subjects
    wording: torch.Tensor      # (B,) which of each subject's captions
    keep: torch.Tensor         # (B, 1) 1 keeps the caption, 0 drops it to the null vector
    noise: torch.Tensor        # (B, dim)
    timesteps: torch.Tensor    # (B,)


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
    """Cosine between z drawn for a whole caption (`texts`: (N, dim)) and the z of the subject it
    describes, against z drawn for nothing: how much the caption pins z down."""
    g = torch.Generator().manual_seed(seed + 777)
    drawn = prior.sample(texts, generator=g)
    free = prior.sample(None, count=len(latents), generator=g)
    truth = torch.nn.functional.normalize(latents, dim=-1)
    cos = lambda a: float((torch.nn.functional.normalize(a, dim=-1) * truth).sum(-1).mean())  # noqa: E731
    return {"subjects": len(latents), "text_cosine": cos(drawn), "unconditional_cosine": cos(free)}


def train_prior(data: Path, out: Path, *, encoder: SemanticEncoder, config: PriorConfig, train: TrainConfig,
                portraits: EncoderTrainConfig, cpu: bool = False, mixed_precision: str | None = None,
                grad_accum: int = 1, fsdp: bool = False, log: Callable[[str], None] = print,
                show_progress: bool = True) -> dict:
    """Train (or resume) the prior into OUT/prior; returns held-out figures.

    As `train_base`: one process or many under `accelerate launch`, each training on its rows of the
    same global batch (same weights whatever the number of processes); the main process writes.
    """
    out = Path(out)
    if fsdp:
        check_fsdp()
    if config.dim != encoder.dim:
        raise ConfigError(f"the prior's dim {config.dim} differs from the encoder's {encoder.dim}")
    identity = json.loads(json.dumps({"model": asdict(config), "train": asdict(train), "data": str(data)}))
    finished = out / "prior_metrics.json"
    state = state_folder(out, PRIOR)    # its own checkpoint: several stages train into one model folder
    if finished.is_file() and not (state / CHECKPOINT).exists() and (out / PRIOR / "config.json").is_file():
        record = json.loads(finished.read_text())
        if {k: record.get(k) for k in identity} == identity:
            log(f"{out / PRIOR} already holds this trained prior; nothing to do")
            return record["figures"]
        raise ConfigError(f"{out}: holds a prior trained with other settings; use another --out")
    kwargs = dict(size=max(encoder.image_size, 64), front_degrees=0.0,
                  captions_per_subject=portraits.captions_per_subject, partial_captions=config.partial_captions,
                  seed=portraits.seed)
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
    # The last whole wording of each held-out subject (partial ones follow the whole ones).
    held = ((portrait_latents(encoder, heldout), embedded[1][:, portraits.captions_per_subject - 1])
            if heldout is not None else None)

    torch.manual_seed(train.seed)
    prior = LatentPrior(config)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    out.mkdir(parents=True, exist_ok=True)
    device = accelerator.device
    n, k = texts.shape[:2]
    scheduler = prior.noise

    def draw(step: int, share: slice) -> PriorBatch:
        g = step_generator(train.seed, step)
        rows = torch.randint(n, (train.batch,), generator=g)
        wording = torch.randint(k, (train.batch,), generator=g)
        keep = (torch.rand(train.batch, generator=g) >= config.diffusion.latent_dropout).float()[:, None]
        noise = torch.randn(train.batch, config.dim, generator=g)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (train.batch,), generator=g)
        return PriorBatch(rows, wording, keep, noise, timesteps)

    def loss(net: torch.nn.Module, batch: PriorBatch, mine: slice) -> torch.Tensor:
        clean, t = latents[batch.rows[mine]].to(device), batch.timesteps[mine].to(device)
        noisy = scheduler.add_noise(clean, batch.noise[mine].to(device), t)
        # Through the prepared (DDP) module, so that gradients are averaged across processes.
        predicted = net(noisy, t, (texts[batch.rows[mine], batch.wording[mine]] * batch.keep[mine]).to(device))
        return torch.nn.functional.mse_loss(predicted.float(), clean)

    t0 = time.time()
    unwrapped, ema, _ = train_steps(prior, optimizer, train=train, out=out, identity=identity,
                                    accelerator=accelerator, draw=draw, loss=loss, stage=PRIOR, desc="train prior",
                                    log=log, show_progress=show_progress, fsdp=fsdp)
    ema.copy_to(unwrapped.parameters())
    unwrapped.eval()
    figures = {"steps": train.steps, "train_subjects": n, "wall_s": round(time.time() - t0, 1),
               "processes": accelerator.num_processes}
    if not accelerator.is_main_process:
        return figures
    figures = {**(evaluate_prior(unwrapped, *held, seed=train.seed) if held is not None else {}), **figures}
    save_component(unwrapped.cpu(), out / PRIOR, kind=KIND)
    write_json(finished, {**identity, "figures": figures})
    remove_tree(state)
    return figures
