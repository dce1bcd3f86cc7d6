"""`rodin bench upsampler` and `rodin bench refiner`: what stages 3 and 4 add, on subjects no model saw.

Both start the same way: procedural subjects from the benchmark seed, fitted with the model's frozen
decoder at the full plane resolution (`rodin bench fit`'s recipe), and their held-out views.

- upsampler: each fitted tri-plane is shrunk to the base resolution (what the base model makes), then
  enlarged twice: by the upsampler, and bicubically (the baseline). Both are rendered at the held-out
  cameras and scored against the true views; the fitted planes themselves give the ceiling.
- refiner: the fitted planes are rendered `scale` times smaller than the views and enlarged by the
  refiner and bicubically. Flicker is the mean change between neighbouring frames of a slow turn
  (2° a frame), as a ratio to the same measure on renders at the full size: a refiner that invents
  detail frame by frame scores above 1. That measure also grows with sharpness (a sharper frame changes
  more when it moves), so the turn is also rendered by the generator itself, and the excess flicker is
  the mean of |(change between frames) − (the true views' change)|: what moves that the subject does not,
  as a ratio to the full-size render's.

`step_s` is one training step (forward and backward) of the stage at its preset's batch size.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from rodin.bench import BenchResult
from rodin.bench.fit import BENCH_SEED
from rodin.errors import DataError

FLICKER_FRAMES = 24
FLICKER_STEP_DEG = 2.0


@dataclass
class HeldoutFits:
    subjects: list            # FitSubject, with their held-out views
    planes: torch.Tensor      # (N, 3, C, R, R) fitted with the model's decoder
    latents: list             # z of each portrait (None when the model has no image encoder)


def _model(model: Path | None, stage: str):
    from rodin.paths import default_model
    from rodin.pipeline import RodinPipeline

    folder = Path(model) if model else default_model()
    pipe = RodinPipeline.from_pretrained(folder)
    if getattr(pipe, stage) is None:
        raise DataError(f"{folder}: this model has no {stage}; train one with `rodin train {stage} --triplanes RUN "
                        f"--out {folder}` or pass --model")
    return folder, pipe


def _heldout_fits(folder: Path, pipe, *, subjects: int, steps: int | None, tmp: Path) -> HeldoutFits:
    import json

    from rodin.data.synth import synth_dataset
    from rodin.fit.run import LoadOptions, fit_dataset, list_sources, load_fit_subject
    from rodin.fit.store import TriplaneStore

    index = json.loads((folder / "model_index.json").read_text())
    preset = _preset_of(folder)
    if steps is not None:
        preset = replace(preset, fit=replace(preset.fit, steps=steps))
    data = tmp / "data"
    synth_dataset(data, subjects=subjects, views=preset.data.views, resolution=preset.data.resolution,
                  seed=BENCH_SEED, portrait_resolution=preset.data.portrait_resolution, progress=False)
    fit_dataset(data, tmp / "run", preset=preset, decoder_path=folder / index["components"]["decoder"],
                show_progress=False, log=lambda m: None)
    store = TriplaneStore.open(tmp / "run" / "triplanes")
    sources = list_sources(data)
    fitted = [load_fit_subject(s, config=preset.fit, options=LoadOptions()) for s in sources]
    return HeldoutFits(fitted, store.get(list(range(len(sources)))).float(),
                       [_latent(pipe, s.path / "portrait.png") for s in sources])


def _psnr(rendered: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss(rendered.clamp(0, 1).float(), target.float()).clamp_min(1e-10)
    return float(-10 * torch.log10(mse))


def upsampler(*, quick: bool = False, model: Path | None = None, subjects: int | None = None,
              steps: int | None = None) -> BenchResult:
    from rodin.eval.heldout import render_heldout
    from rodin.triplane.triplane import resize_planes

    folder, pipe = _model(model, "upsampler")
    up = pipe.upsampler
    cfg = up.config
    preset = _preset_of(folder)
    count = subjects or (2 if quick else 8)
    with tempfile.TemporaryDirectory() as tmp:
        fits = _heldout_fits(folder, pipe, subjects=count, steps=20 if quick else steps, tmp=Path(tmp))
    if fits.planes.shape[-1] != cfg.unet.resolution:
        raise DataError(f"{folder}: the upsampler makes planes of side {cfg.unet.resolution} but the decoder's "
                        f"preset fits {fits.planes.shape[-1]}")
    low = resize_planes(fits.planes, cfg.base_resolution)
    enlarged = resize_planes(low, cfg.unet.resolution, mode=cfg.condition_mode)
    scores = {"fitted": [], "upsampled": [], "enlarged": []}
    began = time.perf_counter()
    made = []
    for k, latent in enumerate(fits.latents):
        made.append(up.sample(low[k:k + 1], latent, generator=torch.Generator().manual_seed(k))[0])
    sample_s = (time.perf_counter() - began) / len(made)
    for k, subject in enumerate(fits.subjects):
        for name, planes in (("fitted", fits.planes[k]), ("upsampled", made[k]), ("enlarged", enlarged[k])):
            views = render_heldout(subject, planes, pipe.decoder, preset=preset)
            scores[name].append(_psnr(views.rendered, views.target))
    mean = {name: sum(v) / len(v) for name, v in scores.items()}
    figures = {
        "subjects": count,
        "psnr_fitted": round(mean["fitted"], 2),
        "psnr_upsampled": round(mean["upsampled"], 2),
        "psnr_enlarged": round(mean["enlarged"], 2),
        "psnr_gain_db": round(mean["upsampled"] - mean["enlarged"], 2),
        "sample_s": round(sample_s, 3),
        "step_s": round(_upsampler_step_s(up, batch=2 if quick else preset.train_upsampler.batch), 3),
        "model": str(folder),
        # Subjects are made and fitted in the same order for any count: the first 8 of 16 are the 8 alone.
        "per_subject": {name: [round(v, 2) for v in values] for name, values in scores.items()},
    }
    rows = [(k.replace("_", " "), str(v)) for k, v in figures.items() if k != "per_subject"]
    return BenchResult("Upsampler (stage 3): held-out renders of upsampled vs bicubically enlarged base planes",
                       rows, figures)


def refiner(*, quick: bool = False, model: Path | None = None, subjects: int | None = None,
            steps: int | None = None) -> BenchResult:
    from rodin.render.cameras import DEFAULT_FOV_X, orbit_cameras
    from rodin.render.volume import render_with_features

    folder, pipe = _model(model, "refiner")
    net = pipe.refiner
    scale = net.config.scale
    preset = _preset_of(folder)
    count = subjects or (2 if quick else 8)
    with tempfile.TemporaryDirectory() as tmp:
        fits = _heldout_fits(folder, pipe, subjects=count, steps=20 if quick else steps, tmp=Path(tmp))
    refined_psnr, bicubic_psnr, flicker, flicker_bicubic, excess, excess_bicubic = [], [], [], [], [], []
    for k, subject in enumerate(fits.subjects):
        side = subject.resolution
        if side % scale:
            raise DataError(f"views of {side} px are not a multiple of the refiner's scale {scale}")
        cams = subject.c2w[subject.heldout_views]
        low = render_with_features(fits.planes[k], pipe.decoder, cams, subject.fov_x, side // scale,
                                   render=preset.render)
        with torch.no_grad():
            refined, enlarged = net.refine(low), net.enlarge(low).clamp(0, 1)
        target = subject.rgb[subject.heldout_views].permute(0, 3, 1, 2)
        refined_psnr.append(_psnr(refined, target))
        bicubic_psnr.append(_psnr(enlarged, target))
        turn = orbit_cameras([FLICKER_STEP_DEG * i for i in range(FLICKER_FRAMES)], [10.0] * FLICKER_FRAMES)
        native = render_with_features(fits.planes[k], pipe.decoder, turn, DEFAULT_FOV_X, side, render=preset.render)
        small = render_with_features(fits.planes[k], pipe.decoder, turn, DEFAULT_FOV_X, side // scale,
                                     render=preset.render)
        with torch.no_grad():
            moving, moving_bicubic = net.refine(small), net.enlarge(small).clamp(0, 1)
        reference = _frame_change(native[:, :3])
        flicker.append(_frame_change(moving) / reference)
        flicker_bicubic.append(_frame_change(moving_bicubic) / reference)
        truth = _true_turn(k, turn, side)
        true_reference = _excess_change(native[:, :3], truth)
        excess.append(_excess_change(moving, truth) / true_reference)
        excess_bicubic.append(_excess_change(moving_bicubic, truth) / true_reference)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    figures = {
        "subjects": count,
        "scale": scale,
        "psnr_refined": round(mean(refined_psnr), 2),
        "psnr_bicubic": round(mean(bicubic_psnr), 2),
        "psnr_gain_db": round(mean(refined_psnr) - mean(bicubic_psnr), 2),
        "flicker_ratio": round(mean(flicker), 3),
        "flicker_ratio_bicubic": round(mean(flicker_bicubic), 3),
        "excess_flicker_ratio": round(mean(excess), 3),
        "excess_flicker_ratio_bicubic": round(mean(excess_bicubic), 3),
        "step_s": round(_refiner_step_s(net, preset, quick=quick), 4),
        "model": str(folder),
    }
    rows = [(k.replace("_", " "), str(v)) for k, v in figures.items()]
    return BenchResult("Refiner (stage 4): held-out views refined vs bicubic enlargement of the render", rows,
                       figures)


def _frame_change(frames: torch.Tensor) -> float:
    """Mean absolute change between neighbouring frames (V, 3, H, W)."""
    return float((frames[1:] - frames[:-1]).abs().mean())


def _excess_change(frames: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean absolute difference between the frame-to-frame changes of `frames` and of the true views (both
    (V, 3, H, W)): the part of the motion the subject does not make."""
    return float(((frames[1:] - frames[:-1]) - (truth[1:] - truth[:-1])).abs().mean())


def _true_turn(index: int, c2w: torch.Tensor, side: int) -> torch.Tensor:
    """Benchmark subject `index` rendered by the generator at the cameras c2w, on white: (V, 3, side, side)."""
    import numpy as np

    from rodin.data.avatar import sample_attributes
    from rodin.data.sdf import build_avatar
    from rodin.data.synth import SUPERSAMPLE, render_views, subject_seed
    from rodin.render.cameras import DEFAULT_FOV_X

    avatar = build_avatar(sample_attributes(subject_seed(BENCH_SEED, index)))
    rgba = torch.from_numpy(np.ascontiguousarray(render_views(avatar, c2w, DEFAULT_FOV_X, side,
                                                              supersample=SUPERSAMPLE)))
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    return rgb.permute(0, 3, 1, 2).float()


def _preset_of(folder: Path):
    import json

    from rodin.config import get_preset

    return get_preset(json.loads((folder / "model_index.json").read_text()).get("preset", "small"))


def _latent(pipe, portrait: Path):
    """z of the subject's portrait when the model has an image encoder (the upsampler reads it), else None."""
    if pipe.semantic is None and pipe.encoder is None:
        return None
    return pipe.encode_image(portrait)


def _upsampler_step_s(model, *, batch: int, repeats: int = 3) -> float:
    import copy

    net = copy.deepcopy(model).train()
    u = net.config.unet
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(batch, u.channels, u.resolution, 3 * u.resolution, generator=g)
    condition = torch.randn(clean.shape, generator=g)
    latent = torch.randn(batch, net.latent_dim, generator=g)
    level = torch.zeros(batch)
    return _median_s(lambda: net.loss(clean, condition, latent, level, noise=torch.randn(clean.shape, generator=g),
                                      timesteps=torch.randint(1000, (batch,), generator=g)).backward(), repeats)


def _refiner_step_s(model, preset, *, quick: bool, repeats: int = 3) -> float:
    import copy

    net = copy.deepcopy(model).train()
    t = preset.train_refiner
    batch, patch = (2, 8) if quick else (t.batch, t.patch)
    g = torch.Generator().manual_seed(0)
    inputs = torch.rand(batch, net.config.in_channels, patch, patch, generator=g)
    targets = torch.rand(batch, 3, patch * net.config.scale, patch * net.config.scale, generator=g)
    return _median_s(lambda: (net(inputs) - targets).abs().mean().backward(), repeats)


def _median_s(step, repeats: int) -> float:
    """Median seconds of `step()` over `repeats` calls after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
