"""`rodin bench decode`: tri-plane sampling + MLP decoding throughput, ours against EG3D's way.

Setting: one tri-plane of 3 x 32 channels x 256², 262,144 random points in the box, and an
EG3D-sized decoder (EG3D's OSGDecoder: Linear(32, 64) -> Softplus -> Linear(64, 33)).

- ours: `sample_triplane` (auto backend: the compiled kernel when it builds), summed planes, the MLP.
- EG3D: one `F.grid_sample` call over the three planes as a batch, as EG3D's `sample_from_planes`
  does, the mean of the planes, the same MLP.
- default: our sampling with rodin's own default decoder (`TriplaneDecoder`, Fourier features,
  view-dependent colour) at 32 channels.

Each is timed forward only (no autograd) and forward + backward (gradients of the planes and the
MLP parameters, loss = sum of outputs), interleaved in the same run so that a busy machine slows
them alike; the median of several repeats after warm-up, in million points per second.

By default the process first calls `rodin.triplane.kernel.tune_allocator()` (glibc keeps freed
memory, so large tensors cost no fresh page faults); both paths run under the same setting, and
`tune_allocator=False` measures glibc's default behaviour.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rodin.bench import BenchResult

CHANNELS = 32
RESOLUTION = 256
POINTS = 262_144


def eg3d_mlp(channels: int = CHANNELS) -> nn.Module:
    """EG3D's OSGDecoder network: 1 density + 32 feature channels."""
    return nn.Sequential(nn.Linear(channels, 64), nn.Softplus(), nn.Linear(64, 1 + 32))


def eg3d_sample(planes: Tensor, points: Tensor) -> Tensor:
    """EG3D's sample_from_planes + the mean in OSGDecoder: the 3 planes as a batch of one
    grid_sample, (3, N, 1, 2) grid, features permuted back to (N, 3, C), then averaged. (With the
    plane axes of DESIGN.md, not EG3D's swapped X-Z; the cost is the same.)"""
    from rodin.triplane.sampling import axis_coordinates

    n, c = points.shape[0], planes.shape[-3]
    grid = axis_coordinates(points).permute(1, 0, 2).unsqueeze(2)           # (3, N, 1, 2)
    feats = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    feats = feats.permute(0, 3, 2, 1).reshape(3, n, c)                       # (3, N, C)
    return feats.mean(0)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(*, quick: bool = False, tune_allocator: bool = True) -> BenchResult:
    from rodin.config import DecoderConfig
    from rodin.triplane.decoder import TriplaneDecoder
    from rodin.triplane.kernel import kernel_info, load_kernel
    from rodin.triplane.kernel import tune_allocator as tune
    from rodin.triplane.sampling import sample_triplane

    tuned = tune() if tune_allocator else False
    load_before = _load_average()
    n = 16_384 if quick else POINTS
    warmup, repeats = (1, 2) if quick else (1, 5)
    generator = torch.Generator().manual_seed(0)
    planes = (torch.randn(3, CHANNELS, RESOLUTION, RESOLUTION, generator=generator) * 0.5).requires_grad_()
    points = torch.rand(n, 3, generator=generator) * 2 - 1
    directions = F.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    torch.manual_seed(0)
    mlp = eg3d_mlp()
    default_decoder = TriplaneDecoder(DecoderConfig(features=CHANNELS))

    build_start = time.perf_counter()
    kernel = load_kernel()
    load_seconds = time.perf_counter() - build_start
    backend = "kernel" if kernel is not None else "torch"

    def zero_grads() -> None:
        planes.grad = None
        mlp.zero_grad(set_to_none=True)
        default_decoder.zero_grad(set_to_none=True)

    def ours_forward() -> None:
        with torch.no_grad():
            mlp(sample_triplane(planes, points))

    def ours_backward() -> None:
        zero_grads()
        mlp(sample_triplane(planes, points)).sum().backward()

    def eg3d_forward() -> None:
        with torch.no_grad():
            mlp(eg3d_sample(planes, points))

    def eg3d_backward() -> None:
        zero_grads()
        mlp(eg3d_sample(planes, points)).sum().backward()

    def default_forward() -> None:
        with torch.no_grad():
            default_decoder(sample_triplane(planes, points), directions)

    def default_backward() -> None:
        zero_grads()
        out = default_decoder(sample_triplane(planes, points), directions)
        (out.density.sum() + out.rgb.sum()).backward()

    cases: dict[str, Callable[[], None]] = {
        "forward": ours_forward, "backward": ours_backward,
        "baseline_forward": eg3d_forward, "baseline_backward": eg3d_backward,
        "default_forward": default_forward, "default_backward": default_backward,
    }
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):                    # interleaved: noise from other work hits all alike
        for name, fn in cases.items():
            times[name].append(_time(fn))
    zero_grads()
    mpts = {name: n / statistics.median(ts) / 1e6 for name, ts in times.items()}

    figures: dict[str, object] = {f"{name}_mpts": round(value, 3) for name, value in mpts.items()}
    figures["speedup_forward"] = round(mpts["forward"] / mpts["baseline_forward"], 2)
    figures["speedup_backward"] = round(mpts["backward"] / mpts["baseline_backward"], 2)
    figures["backend"] = backend
    figures["points"] = n
    figures["resolution"] = RESOLUTION
    figures["channels"] = CHANNELS
    figures["threads"] = torch.get_num_threads()
    figures["repeats"] = repeats
    info = kernel_info()
    figures["kernel_variant"] = info["variant"]
    figures["kernel_load_seconds"] = round(load_seconds, 2)
    figures["allocator_tuned"] = tuned
    figures["load_average"] = load_before

    def row(name: str) -> str:
        spread = sorted(n / t / 1e6 for t in times[name])
        return f"{mpts[name]:.2f} M pts/s  (range {spread[0]:.2f}-{spread[-1]:.2f})"

    rows = [
        ("setting", f"{n:,} random points, 3 x {CHANNELS} x {RESOLUTION}² planes, "
                    f"{torch.get_num_threads()} threads"),
        (f"ours ({backend}) + EG3D-sized MLP, forward", row("forward")),
        (f"ours ({backend}) + EG3D-sized MLP, forward + backward", row("backward")),
        ("EG3D grid_sample + mean + MLP, forward", row("baseline_forward")),
        ("EG3D grid_sample + mean + MLP, forward + backward", row("baseline_backward")),
        (f"ours ({backend}) + default TriplaneDecoder, forward", row("default_forward")),
        (f"ours ({backend}) + default TriplaneDecoder, forward + backward", row("default_backward")),
        ("speed-up over EG3D, forward", f"{figures['speedup_forward']}x"),
        ("speed-up over EG3D, forward + backward", f"{figures['speedup_backward']}x"),
        ("kernel", f"{info['variant'] or 'not built: ' + str(info['error'])}, "
                   f"ready in {load_seconds:.1f} s"),
        ("allocator", "glibc keeps freed memory (tune_allocator)" if tuned else "default"),
        ("machine load (1-min average) at start", "unknown" if load_before is None else f"{load_before:.2f}"),
    ]
    return BenchResult(title="Tri-plane decoding throughput", rows=rows, figures=figures)


def main() -> None:  # pragma: no cover - python -m rodin.bench.decode [--quick] [--default-allocator]
    import json
    import sys

    result = run(quick="--quick" in sys.argv, tune_allocator="--default-allocator" not in sys.argv)
    for what, value in result.rows:
        print(f"{what:<60} {value}")
    print(json.dumps(result.figures))


if __name__ == "__main__":
    main()
