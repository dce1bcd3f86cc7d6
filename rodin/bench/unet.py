"""`rodin bench unet`: the base UNet's training and sampling step, 3D-aware against plain convolution.

Both UNets are built from the same preset (only `conv` differs) and timed interleaved in one run,
so that a busy machine slows them alike; figures are medians after warm-up. A training step is
forward + backward + AdamW on a batch of noisy roll-outs; a sampling step is one guided denoiser
call (conditional and unconditional halves in one batch, as `BaseDiffusion.sample` does).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

from rodin.bench import BenchResult
from rodin.config import get_preset
from rodin.diffusion.unet import TriplaneUNet


def run(*, quick: bool = False, preset: str = "small", batch: int | None = None, repeats: int | None = None
        ) -> BenchResult:
    chosen = get_preset("tiny" if quick else preset)
    cfg = chosen.base.unet
    batch = batch or (4 if quick else chosen.train_base.batch)
    repeats = repeats or (3 if quick else 7)
    torch.manual_seed(0)
    models = {kind: TriplaneUNet(replace(cfg, conv=kind)) for kind in ("aware", "plain")}
    optims = {kind: torch.optim.AdamW(m.parameters(), lr=1e-4) for kind, m in models.items()}
    x = torch.randn(batch, cfg.channels, cfg.resolution, 3 * cfg.resolution)
    t = torch.randint(0, 1000, (batch,))
    z = torch.randn(batch, cfg.latent_dim)

    def train_step(kind: str) -> float:
        model, opt = models[kind], optims[kind]
        start = time.perf_counter()
        loss = (model(x, t, z) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    def sample_step(kind: str) -> float:
        model = models[kind]
        start = time.perf_counter()
        with torch.no_grad():
            model(torch.cat([x, x]), t[:1].expand(2 * batch), torch.cat([z, torch.zeros_like(z)]))
        return time.perf_counter() - start

    times: dict[tuple[str, str], list[float]] = {}
    for rep in range(repeats + 1):
        for kind in ("aware", "plain"):
            for what, fn in (("train", train_step), ("sample", sample_step)):
                elapsed = fn(kind)
                if rep > 0:  # the first round warms up allocators and kernels
                    times.setdefault((kind, what), []).append(elapsed)
    med = {key: statistics.median(v) for key, v in times.items()}
    params = {kind: sum(p.numel() for p in m.parameters()) for kind, m in models.items()}
    ratio = med[("aware", "train")] / med[("plain", "train")]
    figures = {
        "preset": chosen.name,
        "batch": batch,
        "train_step_s": round(med[("aware", "train")], 4),
        "sample_step_s": round(med[("aware", "sample")], 4),
        "plain_train_step_s": round(med[("plain", "train")], 4),
        "plain_sample_step_s": round(med[("plain", "sample")], 4),
        "aware_vs_plain_ratio": round(ratio, 3),
        "aware_vs_plain_sample_ratio": round(med[("aware", "sample")] / med[("plain", "sample")], 3),
        "params_aware": params["aware"],
        "params_plain": params["plain"],
        "threads": torch.get_num_threads(),
    }
    rows = [
        ("preset / batch", f"{chosen.name} / {batch} (planes {cfg.channels}x{cfg.resolution}², roll-out "
                           f"{cfg.resolution}x{3 * cfg.resolution})"),
        ("train step, 3D-aware", f"{figures['train_step_s']:.3f} s"),
        ("train step, plain", f"{figures['plain_train_step_s']:.3f} s"),
        ("sample step (guided), 3D-aware", f"{figures['sample_step_s']:.3f} s"),
        ("sample step (guided), plain", f"{figures['plain_sample_step_s']:.3f} s"),
        ("aware / plain, train", f"{ratio:.2f}x"),
        ("parameters aware / plain", f"{params['aware']:,} / {params['plain']:,}"),
    ]
    return BenchResult(title="rodin bench unet", rows=rows, figures=figures)
