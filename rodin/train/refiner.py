"""`rodin train refiner`: the convolutional refiner trained on renders of a fit run's subjects.

Renders of the fitted training subjects (made once at the start; the fit run's decoder is frozen) are
paired with the dataset's views of the same cameras at `scale` times the size. Each step takes random
crops of random pairs; the loss is L1 + (1 - SSIM), plus LPIPS when a local LPIPS folder is given.

MODEL/
  refiner/     config.json + model.safetensors (EMA weights)
  refiner_log.csv, train_refiner.json (figures: PSNR of refined and of bicubic views, and the gain)
  .refiner_state/checkpoint/   resumable state while training (removed at the end)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from rodin.config import DecoderConfig, Preset, RefinerConfig, RefinerTrainConfig
from rodin.errors import ConfigError, DataError
from rodin.eval.metrics import ssim
from rodin.fit.run import DECODER_KIND
from rodin.fit.store import TriplaneStore
from rodin.io import write_json
from rodin.modeling import load_component, save_component
from rodin.refine.network import KIND, Refiner
from rodin.refine.pairs import RefinerPairs, build_pairs, load_options
from rodin.train.base import data_folder, swapped_in_ema
from rodin.train.loop import make_accelerator, remove_checkpoint, step_generator
from rodin.train.sharding import check_fsdp
from rodin.train.steps import finished_figures, state_folder, train_steps
from rodin.triplane.decoder import TriplaneDecoder

REFINER = "refiner"
RECORD = "train_refiner.json"


@dataclass
class CropBatch:
    inputs: torch.Tensor     # (b, 3 + E, p, p) this process's crops of renders
    targets: torch.Tensor    # (b, 3, s*p, s*p) the matching ground-truth crops
    first: int               # the global-batch row that inputs[0] is


def draw_crops(pairs: RefinerPairs, *, seed: int, step: int, batch: int, patch: int, scale: int,
               share: slice) -> CropBatch:
    """Step `step`'s crops: a pure function of (seed, step), so resuming and multi-process runs agree."""
    g = step_generator(seed, step)
    side = pairs.inputs.shape[-1]
    p = side if patch <= 0 else min(patch, side)
    picked = torch.randint(len(pairs.inputs), (batch,), generator=g)
    ys = torch.randint(side - p + 1, (batch,), generator=g)
    xs = torch.randint(side - p + 1, (batch,), generator=g)
    ins, outs = [], []
    for k in range(share.start, share.stop):
        i, y, x = int(picked[k]), int(ys[k]), int(xs[k])
        ins.append(pairs.inputs[i, :, y:y + p, x:x + p])
        outs.append(pairs.targets[i, :, scale * y:scale * (y + p), scale * x:scale * (x + p)])
    return CropBatch(torch.stack(ins), torch.stack(outs), share.start)


def refiner_loss(pred: torch.Tensor, target: torch.Tensor, *, ssim_weight: float, lpips=None,
                 lpips_weight: float = 0.0) -> torch.Tensor:
    """L1 + ssim_weight * (1 - SSIM) (+ lpips_weight * LPIPS) of (B, 3, H, W) images."""
    loss = (pred - target).abs().mean()
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1.0 - ssim(pred.permute(0, 2, 3, 1), target.permute(0, 2, 3, 1)).mean())
    if lpips is not None and lpips_weight > 0:
        loss = loss + lpips_weight * lpips(pred.clamp(0, 1), target).mean()
    return loss


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss(pred.clamp(0, 1), target).clamp_min(1e-10)
    return float(-10.0 * torch.log10(mse))


@torch.no_grad()
def refiner_figures(model: Refiner, pairs: RefinerPairs, *, chunk: int = 16) -> dict:
    """PSNR of refined views and of bicubic enlargement of the render against ground truth."""
    device = next(model.parameters()).device
    refined = torch.cat([model.refine(x.to(device)).cpu() for x in pairs.inputs.split(chunk)])
    enlarged = torch.cat([model.enlarge(x.to(device)).cpu() for x in pairs.inputs.split(chunk)])
    ours, plain = psnr(refined, pairs.targets), psnr(enlarged, pairs.targets)
    return {"psnr": round(ours, 3), "bicubic_psnr": round(plain, 3), "psnr_gain_db": round(ours - plain, 3)}


def train_refiner(
    run: Path,
    out: Path,
    *,
    preset: Preset,
    data: Path | None = None,
    lpips: Path | None = None,
    model_config: RefinerConfig | None = None,
    train_config: RefinerTrainConfig | None = None,
    cpu: bool = False,
    mixed_precision: str | None = None,
    grad_accum: int = 1,
    fsdp: bool = False,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
) -> dict:
    """Train (or resume) the refiner; returns the final figures (on held-out subjects when the run has any)."""
    run, out = Path(run), Path(out)
    if fsdp:
        check_fsdp()
    mcfg = model_config or preset.refiner
    tcfg = train_config or preset.train_refiner
    store = TriplaneStore.open(run / "triplanes")
    done = [i for i, d in enumerate(store.done) if d]
    train_rows = [i for i in done if store.splits[i] == "train"][:tcfg.subjects]
    heldout_rows = [i for i in done if store.splits[i] != "train"][:max(1, tcfg.subjects // 8)]
    if not train_rows:
        raise DataError(f"{run / 'triplanes'}: no fitted training subjects to train the refiner on")
    decoder = load_component(TriplaneDecoder, DecoderConfig, run / "decoder", kind=DECODER_KIND).eval()
    decoder.requires_grad_(False)
    mcfg = replace(mcfg, in_channels=3 + decoder.config.extra_features)
    dataset = data_folder(run, data)
    identity = {"train": asdict(tcfg), "model": asdict(mcfg), "run": str(run), "subjects": len(train_rows),
                "lpips": str(lpips) if lpips is not None else None}
    out.mkdir(parents=True, exist_ok=True)
    figures = finished_figures(out, RECORD, identity, stage="refiner")
    if figures is not None:
        log(f"{out} already holds this trained refiner; nothing to do")
        return figures

    perceptual = None
    if lpips is not None:
        from rodin.eval.lpips import load_lpips

        perceptual = load_lpips(lpips)
        crop = mcfg.scale * (tcfg.patch or preset.render.resolution)
        if crop < perceptual.spec.min_size:
            raise ConfigError(f"LPIPS needs crops of at least {perceptual.spec.min_size} px; the refiner's are "
                              f"{crop} px (raise the patch)")
    accelerator = make_accelerator(cpu=cpu, mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum)
    device = accelerator.device
    options = load_options(run)
    pairs = build_pairs(store, train_rows, decoder, dataset, render=preset.render, scale=mcfg.scale,
                        views=tcfg.views, options=options, log=log if accelerator.is_main_process else lambda m: None)
    if perceptual is not None:
        perceptual.to(device)

    torch.manual_seed(tcfg.seed)
    model = Refiner(mcfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=0.0)

    def draw(step: int, share: slice) -> CropBatch:
        return draw_crops(pairs, seed=tcfg.seed, step=step, batch=tcfg.batch, patch=tcfg.patch, scale=mcfg.scale,
                          share=share)

    def loss(net: torch.nn.Module, batch: CropBatch, rows: slice) -> torch.Tensor:
        local = slice(rows.start - batch.first, rows.stop - batch.first)
        pred = net(batch.inputs[local].to(device)).float()
        return refiner_loss(pred, batch.targets[local].to(device), ssim_weight=tcfg.ssim_weight, lpips=perceptual,
                            lpips_weight=tcfg.lpips_weight)

    t0 = time.time()
    unwrapped, ema, losses = train_steps(model, optimizer, train=tcfg, out=out, identity=identity,
                                         accelerator=accelerator, draw=draw, loss=loss, stage="refiner",
                                         desc="train refiner", log=log, show_progress=show_progress, fsdp=fsdp)
    figures = {"steps": tcfg.steps, "train_subjects": len(train_rows), "pairs": len(pairs.subjects),
               "wall_s": round(time.time() - t0, 1), "processes": accelerator.num_processes,
               "final_loss": losses[-1] if losses else None}
    if accelerator.is_main_process:
        checked = pairs
        figures["figures_on"] = "train"
        if heldout_rows:
            checked = build_pairs(store, heldout_rows, decoder, dataset, render=preset.render, scale=mcfg.scale,
                                  views=tcfg.views, options=options)
            figures["figures_on"] = "heldout"
        with swapped_in_ema(unwrapped, ema):
            save_component(unwrapped, out / REFINER, kind=KIND)
            figures.update(refiner_figures(unwrapped, checked))
        write_json(out / RECORD, {**identity, "data": str(dataset), "figures": figures})
        remove_checkpoint(state_folder(out, "refiner"))
    return figures
