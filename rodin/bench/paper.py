"""`rodin bench paper`: the paper preset's stages instantiated and stepped once each, on this machine.

For every stage that exists (fit: one joint step of decoder and planes; base diffusion; image-text
encoder; latent prior) it builds the paper-sized model, runs one warm-up training step and then times
`repeats` more at batch 1 (2 for the encoder, whose contrastive loss needs a negative), and reports
parameters, the median step time and the peak resident memory. Each stage runs in its own process so
that its peak memory is its own. The upsampler and the refiner are not built yet, so they are not
measured. The figures are what the scaling guide (docs/scaling.md) extrapolates from.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from rodin.bench import BenchResult
from rodin.config import Preset, get_preset

STAGES = ("fit", "base", "base_checkpointed", "encoder", "prior")
NOT_BUILT = ("upsampler", "refiner")


def _timed(step, repeats: int) -> float:
    step()  # warm-up: allocators, kernels
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _fit_stage(preset: Preset, repeats: int) -> tuple[int, float, dict]:
    from rodin.data.synth import synth_dataset
    from rodin.fit.fitter import SubjectPlanes, fit_step
    from rodin.fit.run import LoadOptions, list_sources, load_fit_subject
    from rodin.triplane.decoder import TriplaneDecoder
    from rodin.triplane.triplane import init_planes

    cfg, tri = preset.fit, preset.triplane
    with tempfile.TemporaryDirectory() as tmp:
        # One generated subject at the preset's image size; the step's cost does not depend on the view count.
        synth_dataset(Path(tmp) / "data", subjects=1, views=cfg.heldout_views + 8, resolution=preset.data.resolution,
                      portrait_resolution=64, progress=False)
        subject = load_fit_subject(list_sources(Path(tmp) / "data")[0], config=cfg, options=LoadOptions())
    torch.manual_seed(0)
    decoder = TriplaneDecoder(preset.decoder)
    g = torch.Generator().manual_seed(0)
    planes = [SubjectPlanes(init_planes(1, tri.channels, tri.resolution, generator=g)[0], cfg.plane_levels)]
    optimizers = [torch.optim.Adam(planes[0].parameters(), lr=cfg.plane_lr),
                  torch.optim.Adam(decoder.parameters(), lr=cfg.decoder_lr)]
    no_rescale = replace(cfg, rescale_prob=0.0)  # time the full-resolution read, the costlier one

    def step():
        fit_step([subject], planes, decoder, optimizers, config=no_rescale, triplane=tri, generator=g)

    params = sum(p.numel() for p in decoder.parameters())
    extra = {"rays_per_step": cfg.rays_per_step, "samples": cfg.samples, "plane_params": planes[0].levels[0].numel()}
    return params, _timed(step, repeats), extra


def _base_stage(preset: Preset, repeats: int, checkpointing: bool) -> tuple[int, float, dict]:
    from rodin.diffusion.base import BaseDiffusion

    torch.manual_seed(0)
    model = BaseDiffusion(preset.base)
    model.unet.gradient_checkpointing = checkpointing
    u = preset.base.unet
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clean = torch.randn(1, u.channels, u.resolution, 3 * u.resolution)
    z = torch.randn(1, u.latent_dim)

    def step():
        loss = model.loss(clean, z, noise=torch.randn_like(clean), timesteps=torch.tensor([500]),
                          keep_latent=torch.ones(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return sum(p.numel() for p in model.parameters()), _timed(step, repeats), {"rollout": [u.channels, u.resolution,
                                                                                           3 * u.resolution]}


def _encoder_stage(preset: Preset, repeats: int) -> tuple[int, float, dict]:
    import torch.nn.functional as F

    from rodin.semantic.dual_encoder import DualEncoder

    torch.manual_seed(0)
    model = DualEncoder(preset.encoder)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    size, batch = preset.encoder.image_size, 2
    pixels, sentences = torch.rand(batch, 3, size, size), torch.randn(batch, preset.encoder.text_features)

    def step():
        images, texts, _ = model(pixels, sentences)
        logits = model.contrastive_logits(images, texts)
        labels = torch.arange(batch)
        loss = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return sum(p.numel() for p in model.parameters()), _timed(step, repeats), {"batch": batch, "image": size}


def _prior_stage(preset: Preset, repeats: int) -> tuple[int, float, dict]:
    from rodin.diffusion.prior import LatentPrior

    torch.manual_seed(0)
    model = LatentPrior(preset.prior)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    z, text = torch.randn(1, preset.prior.dim), torch.randn(1, preset.prior.dim)

    def step():
        loss = model.loss(z, text, noise=torch.randn_like(z), timesteps=torch.tensor([500]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return sum(p.numel() for p in model.parameters()), _timed(step, repeats), {}


def _measure(stage: str, preset_name: str, repeats: int, threads: int) -> dict:
    """Runs in a fresh process: its peak resident memory is the stage's."""
    torch.set_num_threads(threads)
    preset = get_preset(preset_name)
    if stage == "fit":
        params, seconds, extra = _fit_stage(preset, repeats)
    elif stage in ("base", "base_checkpointed"):
        params, seconds, extra = _base_stage(preset, repeats, checkpointing=stage == "base_checkpointed")
    elif stage == "encoder":
        params, seconds, extra = _encoder_stage(preset, repeats)
    else:
        params, seconds, extra = _prior_stage(preset, repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # kB on Linux
    return {"params": params, "step_s": round(seconds, 3), "peak_mb": round(peak_mb), **extra}


def run(*, quick: bool = False, repeats: int | None = None) -> BenchResult:
    preset_name = "tiny" if quick else "paper"
    repeats = repeats or (1 if quick else 2)
    threads = torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    stages: dict[str, dict] = {}
    with context.Pool(1, maxtasksperchild=1) as pool:
        for stage in STAGES:
            stages[stage] = pool.apply(_measure, (stage, preset_name, repeats, threads))
    figures = {"preset": preset_name, "repeats": repeats, "threads": threads, "stages": stages,
               "not_built": list(NOT_BUILT)}
    rows = [(f"{stage}: parameters / train step / peak memory",
             f"{s['params']:,} / {s['step_s']:.2f} s / {s['peak_mb']:,} MB") for stage, s in stages.items()]
    rows.append(("not built yet (not measured)", ", ".join(NOT_BUILT)))
    return BenchResult(title=f"rodin bench paper (preset {preset_name}, batch 1, {threads} threads)", rows=rows,
                       figures=figures)
