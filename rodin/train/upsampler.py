"""`rodin train upsampler`: the upsampler diffusion trained on a fit run's full-resolution tri-planes.

The target is a fitted tri-plane at full resolution; its condition is the same tri-plane area-shrunk to
the base resolution, corrupted (noise, blur, down-and-up resize, strengths drawn per example) and
enlarged again, so that the fitted planes stand in for what the base model will produce. Beside the
x0 loss, patches of the predicted planes are rendered through the fit run's frozen decoder against the
dataset's views (`rodin.train.render_loss`, weight `UpsamplerConfig.render_weight`).

MODEL/
  upsampler/   config.json + model.safetensors (EMA weights; tri-plane statistics inside)
  latent/ or semantic/   where z comes from, shared with `rodin train base` when it ran first
  upsampler_log.csv, train_upsampler.json
  .upsampler_state/checkpoint/   resumable state while training (removed at the end)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from rodin.config import Preset, TrainConfig, UpsamplerConfig
from rodin.diffusion.base import diffusion_target, predicted_clean
from rodin.diffusion.upsampler import KIND, UpsamplerDiffusion
from rodin.errors import ConfigError
from rodin.fit.store import TriplaneStore
from rodin.io import write_json
from rodin.modeling import save_component
from rodin.train.base import (
    conditioning,
    data_folder,
    load_plane_sets,
    portrait_paths,
    streamed_plane_stats,
    swapped_in_ema,
)
from rodin.train.loop import make_accelerator, remove_checkpoint, step_generator
from rodin.train.render_loss import PatchDraw, RenderTerm, draw_patches
from rodin.train.sharding import check_fsdp
from rodin.train.steps import finished_figures, state_folder, train_steps
from rodin.triplane.triplane import resize_planes, roll_in, roll_out

UPSAMPLER = "upsampler"
RECORD = "train_upsampler.json"


@dataclass
class UpsamplerBatch:
    """One step's draws for the global batch and this process's full-resolution planes (rows `share`)."""

    rows: torch.Tensor          # (B,) indices into the training rows
    noise: torch.Tensor         # (B, C, R, 3R)
    timesteps: torch.Tensor     # (B,)
    keep: torch.Tensor          # (B,) 1 keeps z, 0 drops it
    level: torch.Tensor         # (B,) std of the condition noise
    low_noise: torch.Tensor     # (B, 3, C, r, r)
    blur: torch.Tensor          # (B,) sigma, base texels
    shrink: torch.Tensor        # (B,) 1 halves and enlarges the condition again
    planes: torch.Tensor        # (b, 3, C, R, R) this process's rows
    first: int                  # the global-batch row that planes[0] is
    patches: PatchDraw          # where the render loss looks (global batch)


def draw_step(store: TriplaneStore, rows: list[int], config: UpsamplerConfig, *, seed: int, step: int,
              batch: int, latent_dropout: float, share: slice) -> UpsamplerBatch:
    """Step `step`'s batch: a pure function of (seed, step), so resuming and multi-process runs agree."""
    u = config.unet
    g = step_generator(seed, step)
    picked = torch.randint(len(rows), (batch,), generator=g)
    noise = torch.randn((batch, u.channels, u.resolution, 3 * u.resolution), generator=g)
    timesteps = torch.randint(config.diffusion.train_timesteps, (batch,), generator=g)
    keep = (torch.rand(batch, generator=g) >= latent_dropout).float()
    level = torch.rand(batch, generator=g) * config.augment_noise
    r = config.base_resolution
    low_noise = torch.randn((batch, 3, u.channels, r, r), generator=g)
    blur = torch.rand(batch, generator=g) * config.augment_blur
    shrink = (torch.rand(batch, generator=g) < config.augment_resize).float()
    planes = store.get([rows[int(i)] for i in picked[share]]).float()
    patches = draw_patches(g, batch=batch, views=config.render_views, patches=config.render_patches)
    return UpsamplerBatch(picked, noise, timesteps, keep, level, low_noise, blur, shrink, planes, share.start,
                          patches)


def train_upsampler(
    run: Path,
    out: Path,
    *,
    preset: Preset,
    data: Path | None = None,
    semantic: Path | None = None,
    model_config: UpsamplerConfig | None = None,
    train_config: TrainConfig | None = None,
    cpu: bool = False,
    mixed_precision: str | None = None,
    grad_accum: int = 1,
    fsdp: bool = False,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
) -> dict:
    """Train (or resume) the upsampler; returns the final figures. Runs as one process or under
    `accelerate launch`, each process training on its rows of the same global batch."""
    run, out = Path(run), Path(out)
    if fsdp:
        check_fsdp()
    mcfg = model_config or preset.upsampler
    tcfg = train_config or preset.train_upsampler
    store = TriplaneStore.open(run / "triplanes")
    channels, resolution = store.planes.shape[2], store.planes.shape[-1]
    if mcfg.unet.channels != channels or mcfg.unet.resolution != resolution:
        mcfg = replace(mcfg, unet=replace(mcfg.unet, channels=channels, resolution=resolution))
    if mcfg.base_resolution != preset.triplane.base_resolution:
        mcfg = replace(mcfg, base_resolution=preset.triplane.base_resolution)
    if resolution <= mcfg.base_resolution:
        raise ConfigError(f"{run}: planes of side {resolution} are no larger than the base side "
                          f"{mcfg.base_resolution}; nothing to upsample")
    train_rows, heldout_rows = load_plane_sets(store)
    dataset = data_folder(run, data)

    accelerator = make_accelerator(cpu=cpu, mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum)
    out.mkdir(parents=True, exist_ok=True)
    with accelerator.main_process_first():
        encode = conditioning(out, dataset, store, train_rows, semantic=semantic, dim=mcfg.unet.latent_dim,
                              log=log if accelerator.is_main_process else lambda m: None)
    if encode.dim != mcfg.unet.latent_dim:
        mcfg = replace(mcfg, unet=replace(mcfg.unet, latent_dim=encode.dim))
    train_latents = encode(portrait_paths(dataset, [store.ids[i] for i in train_rows]))
    renders = RenderTerm.load(run, dataset, [store.ids[i] for i in train_rows], weight=mcfg.render_weight,
                              views=mcfg.render_views, preset=preset, device=accelerator.device, stage="upsampler",
                              log=log if accelerator.is_main_process else lambda m: None)

    identity = {"train": asdict(tcfg), "model": asdict(mcfg), "run": str(run), "subjects": len(train_rows)}
    figures = finished_figures(out, RECORD, identity, stage="upsampler")
    if figures is not None:
        log(f"{out} already holds this trained upsampler; nothing to do")
        return figures

    torch.manual_seed(tcfg.seed)
    model = UpsamplerDiffusion(mcfg)
    model.set_stats(*streamed_plane_stats(store, train_rows, resolution))
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    device = accelerator.device

    def draw(step: int, share: slice) -> UpsamplerBatch:
        return draw_step(store, train_rows, mcfg, seed=tcfg.seed, step=step, batch=tcfg.batch,
                         latent_dropout=mcfg.diffusion.latent_dropout, share=share)

    def loss(net: torch.nn.Module, batch: UpsamplerBatch, rows: slice) -> torch.Tensor:
        core = accelerator.unwrap_model(net)
        local = slice(rows.start - batch.first, rows.stop - batch.first)
        clean_planes = core.normalise(batch.planes[local].to(device))
        low = resize_planes(clean_planes, mcfg.base_resolution)
        level = batch.level[rows].to(device)
        condition = core.condition(low, noise_level=level, noise=batch.low_noise[rows].to(device),
                                   blur=batch.blur[rows].to(device), shrink=batch.shrink[rows].to(device))
        clean = roll_out(clean_planes)
        noise, t = batch.noise[rows].to(device), batch.timesteps[rows].to(device)
        latent = (train_latents[batch.rows[rows]] * batch.keep[rows, None]).to(device)
        noisy = core.noise.add_noise(clean, noise, t)
        target = diffusion_target(core.noise, clean, noise, t)
        output = net(noisy, t, condition, latent, level)
        total = F.mse_loss(output.float(), target)
        if renders is not None:
            made = core.denormalise(roll_in(predicted_clean(core.noise, noisy, output.float(), t)))
            total = total + renders(made, batch.rows[rows], batch.patches.rows(rows))
        return total

    t0 = time.time()
    unwrapped, ema, losses = train_steps(model, optimizer, train=tcfg, out=out, identity=identity,
                                         accelerator=accelerator, draw=draw, loss=loss, stage="upsampler",
                                         desc="train upsampler", log=log, show_progress=show_progress, fsdp=fsdp)
    figures = {"steps": tcfg.steps, "train_subjects": len(train_rows), "wall_s": round(time.time() - t0, 1),
               "processes": accelerator.num_processes, "final_loss": losses[-1] if losses else None}
    if accelerator.is_main_process:
        with swapped_in_ema(unwrapped, ema):
            save_component(unwrapped, out / UPSAMPLER, kind=KIND)
            checked = (heldout_rows or train_rows)[:8]
            latents = encode(portrait_paths(dataset, [store.ids[i] for i in checked]))
            figures.update(plane_errors(unwrapped, store, checked, latents=latents, seed=tcfg.seed))
        write_json(out / RECORD, {**identity, "data": str(dataset), "figures": figures})
        remove_checkpoint(state_folder(out, "upsampler"))
    return figures


@torch.no_grad()
def plane_errors(model: UpsamplerDiffusion, store: TriplaneStore, rows: list[int], *, seed: int,
                 latents: torch.Tensor) -> dict:
    """Plane MSE against the fitted full-resolution planes of some subjects (held out when there are any):
    the upsampler's samples from the area-shrunk planes, and plain enlargement of those (the baseline)."""
    truth = store.get(rows).float()
    cfg = model.config
    low = resize_planes(truth, cfg.base_resolution)
    made = model.sample(low.to(model.plane_mean.device), latents[:len(rows)],
                        generator=torch.Generator().manual_seed(seed)).cpu()
    enlarged = resize_planes(low, cfg.unet.resolution, mode=cfg.condition_mode)
    return {"plane_mse": F.mse_loss(made, truth).item(), "enlarged_plane_mse": F.mse_loss(enlarged, truth).item()}
