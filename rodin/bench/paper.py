"""`rodin bench paper`: the paper preset's stages instantiated and stepped, on this machine's CPU or a GPU.

For every stage (fit: one joint step of decoder and planes; base diffusion, also with gradient
checkpointing; image-text encoder; latent prior; upsampler diffusion; refiner) it builds the
paper-sized model, runs one warm-up training step and then times `repeats` more, and reports
parameters, the median step time and the peak memory: the process's resident peak on a CPU, the
CUDA allocator's peak on a GPU. Each stage runs in its own process so that its peak is its own.
`batch` examples per step (the encoder takes at least 2: its contrastive loss needs a negative;
the fit step's rays are the preset's whatever the batch). `precision="bf16"` runs forward and loss
under autocast, as `accelerate launch --mixed_precision bf16` does. The figures are what the
scaling guide (docs/scaling.md) extrapolates from.

Every stage also reports `state_mb`: the weights, gradients and optimiser moments one process holds
after a step. `fsdp=N` runs the stages that train with `--fsdp` (base, prior, upsampler, refiner) in N
processes with the model sharded as `rodin train … --fsdp` shards it (gloo on a CPU, NCCL on GPUs, one
GPU per process), each process stepping `batch` examples; the figures are the largest of the processes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from rodin.bench import BenchResult
from rodin.config import Preset, get_preset

STAGES = ("fit", "base", "base_checkpointed", "encoder", "prior", "upsampler", "refiner")
SHARDED = ("base", "base_checkpointed", "prior", "upsampler", "refiner")    # the stages that train with --fsdp
PRECISIONS = ("fp32", "bf16")


class _Step:
    """Where and how a stage's step runs: device, autocast, batch."""

    def __init__(self, device: torch.device, precision: str, batch: int, sharded: bool = False) -> None:
        self.device, self.precision, self.batch, self.sharded = device, precision, batch, sharded
        self.state: list[torch.Tensor] = []     # what a process holds for training: weights, grads, moments

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device)

    def train(self, model: torch.nn.Module, loss_fn) -> Callable[[], None]:
        """One optimiser step of `model` on the loss that `loss_fn()` computes."""
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        if self.sharded:
            from rodin.train.sharding import shard_training_state

            shard_training_state(model, None, opt, device=self.device)

        def step():
            with self.autocast():
                loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            opt.step()
            self.state = [t for p in model.parameters() for t in (p, p.grad) if t is not None]
            self.state += [v for entry in opt.state.values() for v in entry.values() if v.dim() > 0]

        return step

    def state_mb(self) -> float:
        local = [t.to_local() if hasattr(t, "to_local") else t for t in self.state]
        return sum(t.numel() * t.element_size() for t in local) / 2**20


def _timed(step, repeats: int, run: _Step) -> float:
    step()  # warm-up: allocators, kernels
    run.sync()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        run.sync()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _params(model: torch.nn.Module) -> int:
    """Trained parameters (the closed-form heads of the base model are frozen, as in `rodin train base`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _fit_stage(preset: Preset, run: _Step) -> tuple[int, Callable[[], None], dict]:
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
    subject = subject.to(run.device)
    torch.manual_seed(0)
    decoder = TriplaneDecoder(preset.decoder).to(run.device)
    g = torch.Generator().manual_seed(0)
    init = init_planes(1, tri.channels, tri.resolution, generator=g)[0].to(run.device)
    planes = [SubjectPlanes(init, cfg.plane_levels)]
    optimizers = [torch.optim.Adam(planes[0].parameters(), lr=cfg.plane_lr),
                  torch.optim.Adam(decoder.parameters(), lr=cfg.decoder_lr)]
    no_rescale = replace(cfg, rescale_prob=0.0)  # time the full-resolution read, the costlier one

    def step():     # in full precision whatever `run.precision`: `rodin fit` has no mixed precision
        fit_step([subject], planes, decoder, optimizers, config=no_rescale, triplane=tri, generator=g)

    extra = {"rays_per_step": cfg.rays_per_step, "samples": cfg.samples, "plane_params": planes[0].levels[0].numel(),
             "precision": "fp32"}
    return _params(decoder), step, extra


def _base_stage(preset: Preset, run: _Step, checkpointing: bool) -> tuple[int, Callable[[], None], dict]:
    from rodin.diffusion.base import BaseDiffusion

    torch.manual_seed(0)
    model = BaseDiffusion(preset.base).to(run.device)
    model.unet.gradient_checkpointing = checkpointing
    for head in (model.mean_planes, model.text_planes):    # fitted in closed form, then frozen, when trained
        if head is not None and head.kind == "linear":
            head.requires_grad_(False)
    u, b = preset.base.unet, run.batch
    clean = run.randn(b, u.channels, u.resolution, 3 * u.resolution)
    z = run.randn(b, u.latent_dim)
    timesteps = torch.full((b,), 500, device=run.device)
    keep = torch.ones(b, device=run.device)
    step = run.train(model, lambda: model.loss(clean, z, noise=torch.randn_like(clean), timesteps=timesteps,
                                               keep_latent=keep))
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return _params(model), step, {"rollout": [u.channels, u.resolution, 3 * u.resolution], "frozen_params": frozen}


def _encoder_stage(preset: Preset, run: _Step) -> tuple[int, Callable[[], None], dict]:
    import torch.nn.functional as F

    from rodin.semantic.dual_encoder import DualEncoder

    torch.manual_seed(0)
    model = DualEncoder(preset.encoder).to(run.device)
    size, batch = preset.encoder.image_size, max(2, run.batch)
    pixels = torch.rand(batch, 3, size, size, device=run.device)
    sentences = run.randn(batch, preset.encoder.text_features)
    labels = torch.arange(batch, device=run.device)

    def loss():
        images, texts, _ = model(pixels, sentences)
        logits = model.contrastive_logits(images, texts).float()
        return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)

    return _params(model), run.train(model, loss), {"batch": batch, "image": size}


def _prior_stage(preset: Preset, run: _Step) -> tuple[int, Callable[[], None], dict]:
    from rodin.diffusion.prior import LatentPrior

    torch.manual_seed(0)
    model = LatentPrior(preset.prior).to(run.device)
    b = run.batch
    z, text = run.randn(b, preset.prior.dim), run.randn(b, preset.prior.dim)
    timesteps = torch.full((b,), 500, device=run.device)
    step = run.train(model, lambda: model.loss(z, text, noise=torch.randn_like(z), timesteps=timesteps))
    return _params(model), step, {}


def _upsampler_stage(preset: Preset, run: _Step) -> tuple[int, Callable[[], None], dict]:
    from rodin.diffusion.upsampler import UpsamplerDiffusion

    torch.manual_seed(0)
    model = UpsamplerDiffusion(preset.upsampler).to(run.device)
    u, b = preset.upsampler.unet, run.batch
    low = run.randn(b, 3, u.channels, preset.upsampler.base_resolution, preset.upsampler.base_resolution)
    clean = run.randn(b, u.channels, u.resolution, 3 * u.resolution)
    z = run.randn(b, u.latent_dim)
    level = torch.full((b,), 0.1, device=run.device)
    timesteps = torch.full((b,), 500, device=run.device)

    def loss():
        condition = model.condition(low, noise_level=level, noise=torch.randn_like(low))
        return model.loss(clean, condition, z, level, noise=torch.randn_like(clean), timesteps=timesteps)

    return _params(model), run.train(model, loss), {"rollout": [u.channels, u.resolution, 3 * u.resolution]}


def _refiner_stage(preset: Preset, run: _Step) -> tuple[int, Callable[[], None], dict]:
    from rodin.refine.network import Refiner

    torch.manual_seed(0)
    config = replace(preset.refiner, in_channels=3 + preset.decoder.extra_features)
    model = Refiner(config).to(run.device)
    patch, b = preset.train_refiner.patch, run.batch
    render = torch.rand(b, config.in_channels, patch, patch, device=run.device)
    target = torch.rand(b, 3, patch * config.scale, patch * config.scale, device=run.device)
    step = run.train(model, lambda: (model(render).float() - target).abs().mean())
    return _params(model), step, {"patch": [patch, patch * config.scale]}


def _measure(stage: str, preset_name: str, repeats: int, threads: int, device: str, precision: str,
             batch: int, sharded: bool = False) -> dict:
    """Runs in a fresh process: its peak memory is the stage's."""
    torch.set_num_threads(threads)
    preset = get_preset(preset_name)
    run = _Step(torch.device(device), precision, batch, sharded)
    if run.device.type == "cuda":
        torch.cuda.set_device(run.device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if stage == "fit":
        params, step, extra = _fit_stage(preset, run)
    elif stage in ("base", "base_checkpointed"):
        params, step, extra = _base_stage(preset, run, checkpointing=stage == "base_checkpointed")
    else:
        builders = {"encoder": _encoder_stage, "prior": _prior_stage, "upsampler": _upsampler_stage,
                    "refiner": _refiner_stage}
        params, step, extra = builders[stage](preset, run)
    seconds = _timed(step, repeats, run)
    if run.device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(run.device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # kB on Linux
    return {"params": params, "step_s": round(seconds, 4), "peak_mb": round(peak_mb),
            "state_mb": round(run.state_mb(), 1), **extra}


def _measure_rank(rank: int, processes: int, init: str, results: dict, stage: str, preset_name: str, repeats: int,
                  threads: int, device: str, precision: str, batch: int) -> None:
    """One of `processes` sharded processes (torch.multiprocessing.spawn gives the rank first)."""
    import torch.distributed as dist

    where = torch.device(device)
    if where.type == "cuda":
        where = torch.device("cuda", rank)
        torch.cuda.set_device(where)
    dist.init_process_group("nccl" if where.type == "cuda" else "gloo", init_method=init, rank=rank,
                            world_size=processes)
    try:
        results[rank] = _measure(stage, preset_name, repeats, threads, str(where), precision, batch, sharded=True)
    finally:
        dist.destroy_process_group()


def _measure_sharded(stage: str, preset_name: str, repeats: int, threads: int, device: str, precision: str,
                     batch: int, processes: int) -> dict:
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_measure_rank, nprocs=processes, join=True,
                 args=(processes, f"file://{Path(tmp) / 'rendezvous'}", results, stage, preset_name, repeats,
                       threads, device, precision, batch))
    ranks = [results[r] for r in range(processes)]
    worst = {key: max(r[key] for r in ranks) for key in ("step_s", "peak_mb", "state_mb")}
    return {**ranks[0], **worst, "processes": processes}


def run(*, quick: bool = False, repeats: int | None = None, device: str = "cpu", precision: str = "fp32",
        batch: int = 1, stages: tuple[str, ...] | None = None, fsdp: int = 1) -> BenchResult:
    from rodin.errors import ConfigError

    if fsdp < 1:
        raise ConfigError(f"--fsdp takes a number of processes, at least 2 (1 = not sharded), got {fsdp}")
    if fsdp > 1 and device.startswith("cuda") and torch.cuda.device_count() < fsdp:
        raise ConfigError(f"--fsdp {fsdp} on {device} needs {fsdp} GPUs, one per process; this machine has "
                          f"{torch.cuda.device_count()}")
    if stages is None:
        stages = SHARDED if fsdp > 1 else STAGES
    elif fsdp > 1 and any(s not in SHARDED for s in stages):
        raise ConfigError(f"--fsdp shards only {', '.join(SHARDED)}; leave the other stages out of --stages")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    preset_name = "tiny" if quick else "paper"
    repeats = repeats or (1 if quick else (5 if device != "cpu" else 2))
    threads = torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    measured: dict[str, dict] = {}
    args = (preset_name, repeats, threads, device, precision, batch)
    if fsdp > 1:
        for stage in stages:
            measured[stage] = _measure_sharded(stage, *args, processes=fsdp)
    else:
        with context.Pool(1, maxtasksperchild=1) as pool:
            for stage in stages:
                measured[stage] = pool.apply(_measure, (stage, *args))
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    figures = {"preset": preset_name, "repeats": repeats, "threads": threads, "device": device, "gpu": gpu,
               "precision": precision, "batch": batch, "fsdp": fsdp, "stages": measured,
               "memory": "CUDA allocator peak" if gpu else "process resident peak"}
    rows = [(f"{stage}: parameters / train step / peak memory / training state",
             f"{s['params']:,} / {s['step_s']:.3f} s / {s['peak_mb']:,} MB / {s['state_mb']:,} MB")
            for stage, s in measured.items()]
    where = gpu or f"CPU, {threads} threads"
    sharding = f", sharded over {fsdp} processes (largest process)" if fsdp > 1 else ""
    return BenchResult(title=f"rodin bench paper (preset {preset_name}, batch {batch}, {precision}, {where}{sharding})",
                       rows=rows, figures=figures)
