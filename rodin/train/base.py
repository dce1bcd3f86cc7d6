"""`rodin train base`: the base diffusion model trained on a fit run's tri-planes.

MODEL/
  base/        config.json + model.safetensors (EMA weights; tri-plane statistics inside)
  decoder/     the run's decoder, copied, so the model renders on its own
  semantic/    the image-text encoder that made z (`rodin train encoder`), or, without one,
  latent/      a pixel-PCA portrait encoder fitted here
  samples/     renders of samples during training; train_log.csv; train_base.json
  checkpoint/  resumable state while training (removed at the end)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers.training_utils import EMAModel

from rodin.config import BaseModelConfig, DecoderConfig, Preset, RenderConfig, TrainConfig
from rodin.diffusion.base import KIND as BASE_KIND
from rodin.diffusion.base import BaseDiffusion, denoising_loss, diffusion_target, predicted_clean
from rodin.diffusion.mean_planes import MEAN_HEADS
from rodin.errors import ConfigError, DataError
from rodin.fit.run import DECODER_KIND, list_sources
from rodin.fit.store import TriplaneStore
from rodin.io import copy_tree, png_bytes, write_atomic, write_json
from rodin.modeling import load_component, save_component
from rodin.pipeline import write_model_index
from rodin.render.cameras import DEFAULT_FOV_X, orbit_cameras
from rodin.render.turntable import grid
from rodin.render.volume import occupancy_from_density, render_views
from rodin.semantic.pixel_encoder import KIND as LATENT_KIND
from rodin.semantic.pixel_encoder import PixelEncoder, PixelEncoderConfig, load_portrait
from rodin.semantic.space import latent_from_embedding
from rodin.train.base_batches import BaseSteps, StepBatch, step_loader
from rodin.train.channel_weights import decoder_channel_weights
from rodin.train.loop import make_accelerator, remove_checkpoint
from rodin.train.render_loss import RenderTerm
from rodin.train.sharding import check_fsdp
from rodin.train.steps import finished_figures, train_steps
from rodin.train.text_head import CACHE as TEXT_CACHE
from rodin.train.text_head import caption_texts, fit_planes_head, fit_text_head
from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.triplane import resize_planes

SEMANTIC = "semantic"
CHANNEL_WEIGHTINGS = ("uniform", "decoder")
RECORD = "train_base.json"
LOG_FIELDS = ("step", "time", "loss", "lr", "heldout_loss", "step_s")


@dataclass
class PlaneSet:
    """Base-resolution tri-planes (N, 3, C, H, W) of some subjects with their z (N, D)."""

    ids: list[str]
    planes: torch.Tensor
    latents: torch.Tensor


def data_folder(run: Path, data: Path | None) -> Path:
    """The dataset a fit run was made from: given, or as recorded in RUN/fit_config.json."""
    if data is not None:
        if not Path(data).is_dir():
            raise DataError(f"{data}: dataset folder not found")
        return Path(data)
    try:
        recorded = Path(json.loads((run / "fit_config.json").read_text())["data"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{run}: no dataset recorded in fit_config.json; pass --data DATA") from None
    for candidate in (recorded, run.parent / recorded):
        if candidate.is_dir():
            return candidate
    raise DataError(f"{run}: its dataset {recorded} is not on disk; pass --data DATA")


def portrait_paths(data: Path, ids: list[str]) -> list[Path]:
    from rodin.data.nerf import read_transforms

    folders = {s.id: s.path for s in list_sources(data)}
    paths = []
    for subject in ids:
        if subject not in folders:
            raise DataError(f"{data}: subject {subject!r} of the fit run is not in this dataset")
        portrait = read_transforms(folders[subject]).portrait
        if portrait is None or not portrait.is_file():
            raise DataError(f"{folders[subject]}: no portrait.png; the base model is conditioned on portraits")
        paths.append(portrait)
    return paths


def load_plane_sets(store: TriplaneStore) -> tuple[list[int], list[int]]:
    """Rows of fitted subjects: training split, and the rest (held out)."""
    done = [i for i, d in enumerate(store.done) if d]
    train = [i for i in done if store.splits[i] == "train"]
    heldout = [i for i in done if store.splits[i] != "train"]
    if len(train) < 2:
        raise DataError(f"{store.root}: {len(train)} fitted training subjects; the base model needs at least 2")
    return train, heldout


def plane_stats(planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over subjects, planes and texels of (N, 3, C, H, W)."""
    flat = planes.transpose(0, 2).reshape(planes.shape[2], -1).double()
    return flat.mean(dim=1).float(), flat.std(dim=1).float()


def streamed_plane_stats(store: TriplaneStore, rows: list[int], resolution: int,
                         chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """`plane_stats` of the rows at `resolution`, in one pass over the store, a chunk in memory at a time."""
    total = count = total_sq = 0
    for start in range(0, len(rows), chunk):
        planes = resize_planes(store.get(rows[start:start + chunk]).float(), resolution)
        flat = planes.transpose(0, 2).reshape(planes.shape[2], -1).double()
        total = total + flat.sum(dim=1)
        total_sq = total_sq + flat.pow(2).sum(dim=1)
        count += flat.shape[1]
    mean = total / count
    var = (total_sq - count * mean.pow(2)) / max(1, count - 1)
    return mean.float(), var.clamp_min(0).sqrt().float()


def train_base(
    run: Path,
    out: Path,
    *,
    preset: Preset,
    data: Path | None = None,
    semantic: Path | None = None,
    model_config: BaseModelConfig | None = None,
    train_config: TrainConfig | None = None,
    cpu: bool = False,
    mixed_precision: str | None = None,
    grad_accum: int = 1,
    fsdp: bool = False,
    gradient_checkpointing: bool = False,
    workers: int = 0,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
) -> dict:
    """Train (or resume) the base model; returns the final figures.

    Runs as one process or under `accelerate launch` (DDP): every process draws the same global
    batch and trains on its rows of it, so N processes give the weights one process would. Only the
    main process writes files. `grad_accum` splits each process's rows into micro-batches (same
    effective batch); neither it nor mixed precision is part of the run's identity, so a run may
    resume on another machine layout. `workers` > 0 reads batches ahead in that many DataLoader
    processes (pinned memory on CUDA); the result is the same as without (rodin.train.base_batches).
    """
    run, out = Path(run), Path(out)
    if fsdp:
        check_fsdp()
    if workers < 0:
        raise ConfigError(f"workers must be 0 or more, got {workers}")
    mcfg = model_config or preset.base
    tcfg = train_config or preset.train_base
    if mcfg.channel_weighting not in CHANNEL_WEIGHTINGS:
        raise ConfigError(f"BaseModelConfig.channel_weighting must be one of {', '.join(CHANNEL_WEIGHTINGS)}, "
                          f"got {mcfg.channel_weighting!r}")
    if mcfg.mean_head not in MEAN_HEADS:
        raise ConfigError(f"BaseModelConfig.mean_head must be one of {', '.join(MEAN_HEADS)}, got {mcfg.mean_head!r}")
    if mcfg.mean_weight < 0:
        raise ConfigError(f"BaseModelConfig.mean_weight cannot be negative, got {mcfg.mean_weight}")
    store = TriplaneStore.open(run / "triplanes")
    channels = store.planes.shape[2]
    resolution = preset.triplane.base_resolution
    if mcfg.unet.channels != channels or mcfg.unet.resolution != resolution:
        mcfg = replace(mcfg, unet=replace(mcfg.unet, channels=channels, resolution=resolution))
    train_rows, heldout_rows = load_plane_sets(store)
    decoder = load_component(TriplaneDecoder, DecoderConfig, run / "decoder", kind=DECODER_KIND)
    dataset = data_folder(run, data)

    accelerator = make_accelerator(cpu=cpu, mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum)
    out.mkdir(parents=True, exist_ok=True)
    with accelerator.main_process_first():  # the main process writes OUT/latent or OUT/semantic; others read it
        encode = conditioning(out, dataset, store, train_rows, semantic=semantic, dim=mcfg.unet.latent_dim,
                              log=log if accelerator.is_main_process else lambda m: None)
    if encode.dim != mcfg.unet.latent_dim:
        mcfg = replace(mcfg, unet=replace(mcfg.unet, latent_dim=encode.dim))
    if mcfg.text_head and (not mcfg.mean_planes or encode.component != SEMANTIC):
        log("no text head: it needs the mean-planes head and a text encoder (--semantic)")
        mcfg = replace(mcfg, text_head=False)

    train_ids = [store.ids[i] for i in train_rows]
    train_latents = encode(portrait_paths(dataset, train_ids))
    held_ids = [store.ids[i] for i in heldout_rows[:64]]
    held_set = (PlaneSet(held_ids, resize_planes(store.get(heldout_rows[:64]).float(), resolution),
                         encode(portrait_paths(dataset, held_ids))) if held_ids else None)
    if accelerator.is_main_process:
        copy_tree(run / "decoder", out / "decoder")

    identity = {"train": asdict(tcfg), "model": asdict(mcfg), "run": str(run), "subjects": len(train_ids)}
    figures = finished_figures(out, RECORD, identity, stage="base", state=out)
    if figures is not None:
        log(f"{out} already holds this trained model; nothing to do")
        return figures
    if mcfg.render_weight > 0 and (mcfg.render_patches < 1 or mcfg.render_views < 1):
        raise ConfigError("the base model's render loss needs render_patches and render_views of at least 1")
    # Loaded after the check above: a finished model does not read every training subject's views again.
    renders = RenderTerm.load(run, dataset, train_ids, weight=mcfg.render_weight, views=mcfg.render_views,
                              preset=preset, device=accelerator.device, stage="base model",
                              log=log if accelerator.is_main_process else lambda m: None)

    torch.manual_seed(tcfg.seed)
    model = BaseDiffusion(mcfg)
    model.unet.gradient_checkpointing = gradient_checkpointing
    model.set_stats(*streamed_plane_stats(store, train_rows, resolution))
    if model.mean_planes is not None and model.mean_planes.kind == "linear":
        penalty = fit_linear_head(model, store, train_rows, train_latents)
        log(f"mean-planes head: ridge regression on {len(train_rows)} subjects (penalty {penalty:g}), frozen")
    if model.text_planes is not None:
        with accelerator.main_process_first():      # the main process fills the caption cache; the others read it
            texts = caption_texts(encode.encoder, dataset, train_ids, out / TEXT_CACHE,
                                  log if accelerator.is_main_process else lambda m: None)
        penalty = fit_text_head(model, store, train_rows, texts)
        log(f"text head: ridge regression on {len(train_rows)} subjects x {texts.shape[1]} captions "
            f"(penalty {penalty:g}), frozen")
    weights = None
    if mcfg.channel_weighting == "decoder":
        sample_rows = train_rows[:: max(1, len(train_rows) // 64)][:64]
        weights = decoder_channel_weights(resize_planes(store.get(sample_rows).float(), resolution), decoder,
                                          model.plane_std, generator=torch.Generator().manual_seed(tcfg.seed))
        log("channel weights (decoder): " + " ".join(f"{w:.2f}" for w in weights.tolist()))
        weights = weights.to(accelerator.device)[None, :, None, None]
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    device = accelerator.device
    scheduler = model.noise
    batches = None

    def draw(step: int, share: slice) -> tuple[StepBatch, int]:
        nonlocal batches
        if batches is None:     # made at the first step, the one a resumed run starts from
            batches = iter(step_loader(
                BaseSteps(store, train_rows, resolution=resolution, channels=mcfg.unet.channels, seed=tcfg.seed,
                          batch=tcfg.batch, train_timesteps=scheduler.config.num_train_timesteps,
                          latent_dropout=mcfg.diffusion.latent_dropout, share=share, first=step, steps=tcfg.steps,
                          render_views=mcfg.render_views if renders else 0,
                          render_patches=mcfg.render_patches if renders else 0),
                workers=workers, pin_memory=device.type == "cuda"))
        return next(batches), share.start

    def loss(net: torch.nn.Module, batch: tuple[StepBatch, int], mine: slice) -> torch.Tensor:
        drawn, first = batch
        local = slice(mine.start - first, mine.stop - first)
        clean = model.normalise(drawn.planes[local].to(device, non_blocking=True))
        noise = drawn.noise[mine].to(device, non_blocking=True)
        timesteps = drawn.timesteps[mine].to(device)
        latent = (train_latents[drawn.rows[mine]] * drawn.keep[mine, None]).to(device)
        total, output, noisy = denoising_loss(net, clean, latent, noise=noise, timesteps=timesteps,
                                              channel_weights=weights)
        if renders is not None:
            made = model.denormalise(predicted_clean(scheduler, noisy, output, timesteps))
            total = total + renders(made, drawn.rows[mine], drawn.patches.rows(mine))
        return total

    def after(done: int, trained: BaseDiffusion, ema: EMAModel) -> dict:
        if held_set is None:
            return {}
        with swapped_in_ema(trained, ema):
            row = {"heldout_loss": heldout_loss(trained, held_set, seed=tcfg.seed)}
            if trained.mean_planes is not None:
                row["heldout_mean_error"] = heldout_mean_error(trained, held_set)
            write_samples(trained, decoder, held_set, preset, out / "samples" / f"step_{done:07d}.png", seed=tcfg.seed)
        return row

    t0 = time.time()
    unwrapped, ema, _ = train_steps(model, optimizer, train=tcfg, out=out, identity=identity, accelerator=accelerator,
                                    draw=draw, loss=loss, stage="base", desc="train base", log=log,
                                    show_progress=show_progress, state=out, log_file="train_log.csv",
                                    fields=LOG_FIELDS + (("heldout_mean_error",) if mcfg.mean_planes else ()),
                                    after=after, fsdp=fsdp)
    batches = None      # lets the DataLoader's workers go
    figures: dict = {"steps": tcfg.steps, "train_subjects": len(train_ids), "wall_s": round(time.time() - t0, 1),
                     "processes": accelerator.num_processes}
    if weights is not None:
        figures["channel_weights"] = [round(w, 4) for w in weights.flatten().tolist()]
    if accelerator.is_main_process:
        with swapped_in_ema(unwrapped, ema):
            # Half precision halves the shipped model; renders from it match float32 ones (tested).
            save_component(unwrapped, out / "base", kind=BASE_KIND, dtype=torch.float16)
            if held_set is not None:
                figures["heldout_loss"] = heldout_loss(unwrapped, held_set, seed=tcfg.seed)
                if unwrapped.mean_planes is not None:
                    figures["heldout_mean_error"] = heldout_mean_error(unwrapped, held_set)
        write_json(out / RECORD, {**identity, "data": str(dataset), "figures": figures})
        components = {"base": "base", "decoder": "decoder", encode.component: encode.component}
        if (out / "edits").is_dir():     # measured beside the encoder before the index existed
            components["edits"] = "edits"
        write_model_index(out, render=preset.render, preset=preset.name, components=components)
        remove_checkpoint(out)
    return figures


def fit_linear_head(model: BaseDiffusion, store: TriplaneStore, rows: list[int], latents: torch.Tensor) -> float:
    """Set the linear mean-planes head to the ridge regression of the training roll-outs on their z, and
    freeze it: the closed form is the optimum of the head's own loss, so gradient steps on it could only fit
    the training subjects closer."""
    return fit_planes_head(model, model.mean_planes, store, rows, latents[:, None])


class PortraitLatents:
    """z of portrait files, from the model's semantic encoder (MODEL/semantic, `rodin train encoder`) or,
    without one, from a pixel-PCA encoder fitted here (MODEL/latent)."""

    def __init__(self, encoder, component: str) -> None:
        self.encoder, self.component = encoder, component
        self.dim = encoder.dim if component == SEMANTIC else encoder.config.dim

    @torch.no_grad()
    def __call__(self, paths: list[Path]) -> torch.Tensor:
        if self.component != SEMANTIC:
            return self.encoder.encode_files(paths)
        pixels = torch.stack([load_portrait(p, size=self.encoder.image_size) for p in paths])
        return torch.cat([latent_from_embedding(self.encoder.encode_images(chunk).cpu())
                          for chunk in pixels.split(256)])


def conditioning(out: Path, dataset: Path, store: TriplaneStore, train_rows: list[int], *, semantic: Path | None,
                 dim: int, log: Callable[[str], None]) -> PortraitLatents:
    """Where the base model's z comes from; the component is kept in OUT so the model stands alone."""
    from rodin.semantic.loading import load_semantic

    if semantic is not None and Path(semantic).resolve() != (out / SEMANTIC).resolve():
        if not (Path(semantic) / "config.json").is_file():
            raise DataError(f"{semantic}: not a semantic encoder folder (train one with `rodin train encoder`)")
        copy_tree(semantic, out / SEMANTIC)
    if (out / SEMANTIC / "config.json").is_file():
        return PortraitLatents(load_semantic(out / SEMANTIC), SEMANTIC)
    latent_dir = out / "latent"
    if (latent_dir / "config.json").is_file():
        return PortraitLatents(load_component(PixelEncoder, PixelEncoderConfig, latent_dir, kind=LATENT_KIND),
                               "latent")
    encoder = PixelEncoder(PixelEncoderConfig(dim=dim))
    train_ids = [store.ids[i] for i in train_rows]
    log(f"no semantic encoder in {out}; fitting a pixel-PCA portrait encoder on {len(train_ids)} portraits")
    encoder.fit(torch.stack([load_portrait(p, size=encoder.config.image_size)
                             for p in portrait_paths(dataset, train_ids)]))
    save_component(encoder, latent_dir, kind=LATENT_KIND)
    return PortraitLatents(encoder, "latent")


class swapped_in_ema:
    """Within the block the model holds its EMA weights; its training weights come back after."""

    def __init__(self, model: torch.nn.Module, ema: EMAModel) -> None:
        self.model, self.ema = model, ema

    def __enter__(self):
        self.ema.store(self.model.parameters())
        self.ema.copy_to(self.model.parameters())
        self.model.eval()

    def __exit__(self, *exc):
        self.ema.restore(self.model.parameters())
        self.model.train()


@torch.no_grad()
def heldout_loss(model: BaseDiffusion, held: PlaneSet, *, seed: int, repeats: int = 4) -> float:
    """Denoising loss on held-out subjects at fixed noise and noise levels: comparable across runs."""
    device = model.plane_mean.device
    clean = model.normalise(held.planes.to(device))
    g = torch.Generator().manual_seed(seed + 12345)
    total = 0.0
    for _ in range(repeats):
        noise = torch.randn(clean.shape, generator=g).to(device)
        t = torch.randint(model.noise.config.num_train_timesteps, (len(clean),), generator=g).to(device)
        noisy = model.noise.add_noise(clean, noise, t)
        target = diffusion_target(model.noise, clean, noise, t)
        total += torch.nn.functional.mse_loss(model(noisy, t, held.latents.to(device)), target).item()
    return total / repeats


@torch.no_grad()
def heldout_mean_error(model: BaseDiffusion, held: PlaneSet) -> float:
    """MSE of the mean-planes head against held-out subjects' normalised planes, as a fraction of what its
    output for the null z (the training subjects' average) scores: 1 reads nothing from z, 0 everything."""
    device = model.plane_mean.device
    clean = model.normalise(held.planes.to(device))
    latents = held.latents.to(device)
    error = torch.nn.functional.mse_loss(model.mean_planes(latents).float(), clean)
    average = torch.nn.functional.mse_loss(model.mean_planes(torch.zeros_like(latents)).float(), clean)
    return (error / average.clamp_min(1e-12)).item()


@torch.no_grad()
def render_planes(planes: torch.Tensor, decoder: TriplaneDecoder, r: RenderConfig, *, azimuths: list[float],
                  resolution: int = 64) -> np.ndarray:
    """(len(azimuths), R, R, 3) uint8 renders of one tri-plane (3, C, H, W) at 10° elevation."""
    from rodin.io import to_uint8

    planes = planes.float().cpu()[None]
    occupancy = occupancy_from_density(planes, decoder, resolution=r.occupancy_resolution,
                                       threshold=r.occupancy_threshold)
    c2w = orbit_cameras(azimuths, [10.0] * len(azimuths))
    rgb, _, _ = render_views(planes, decoder, c2w, DEFAULT_FOV_X, resolution, samples=r.samples,
                             importance=r.importance, occupancy=occupancy, background=r.background)
    return to_uint8(rgb.numpy())


def write_samples(model: BaseDiffusion, decoder: TriplaneDecoder, held: PlaneSet, preset: Preset, path: Path, *,
                  seed: int, count: int = 4) -> None:
    """One row per held-out subject: its fitted planes (front, side), then a sample from its z (front, side)."""
    count = min(count, len(held.ids))
    g = torch.Generator().manual_seed(seed)
    samples = model.sample(held.latents[:count].to(model.plane_mean.device), generator=g).cpu()
    rows = []
    for k in range(count):
        truth = render_planes(held.planes[k], decoder, preset.render, azimuths=[0.0, 60.0])
        made = render_planes(samples[k], decoder, preset.render, azimuths=[0.0, 60.0])
        rows.append(np.concatenate([truth, made]))
    write_atomic(path, png_bytes(grid(np.concatenate(rows), 4)))
