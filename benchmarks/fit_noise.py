"""How much of the fitted tri-planes' variance is the subject, and how much the fit's own randomness?

Fits the same unseen subjects twice with the frozen shipped decoder, with two seeds (other ray draws,
other start noise), for each setting asked, and compares the two fits at the base model's resolution
in the base model's normalised units (the planes as the diffusion model sees them). The noise share
is the variance of the difference between the fits (halved) over the variance across subjects; the
per-channel noise sits beside the decoder's channel weights (rodin.train.channel_weights), which say
how much each channel changes the image.

    .venv/bin/python benchmarks/fit_noise.py --unseen UNSEEN --setting default --setting plane_eps=1e-6 \
        --out benchmarks/evals/fit-noise.json

UNSEEN: e.g. `rodin data synth --out UNSEEN --subjects 8 --views 32 --resolution 64 --seed 1000`. A
setting is `default` or FitConfig KEY=VALUE words joined by commas; runs go to runs/fitnoise-TAG-sSEED,
TAG the setting without '=' (a finished run is read, not refitted); results are keyed by TAG, '.' and '-' made '_'.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from rodin.config import DecoderConfig, FitConfig, from_dict, get_preset, parse_settings
from rodin.errors import RodinError
from rodin.fit.run import DECODER_KIND, fit_dataset
from rodin.fit.store import TriplaneStore
from rodin.io import write_json
from rodin.modeling import load_component
from rodin.train.channel_weights import decoder_channel_weights
from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.triplane import resize_planes

SEEDS = (1, 2)


def fitted_planes(run: Path, resolution: int) -> torch.Tensor:
    store = TriplaneStore.open(run / "triplanes")
    return resize_planes(store.get([i for i, d in enumerate(store.done) if d]).float(), resolution)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unseen", type=Path, required=True)
    parser.add_argument("--decoder", type=Path, default=Path("models/small/decoder"))
    parser.add_argument("--stats", type=Path, default=Path("models/small-1k/base"),
                        help="a base model folder whose per-channel statistics normalise the planes")
    parser.add_argument("--setting", action="append", default=[], help="default, or KEY=VALUE,... (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    small = get_preset("small")
    stats = load_file(str(args.stats / "model.safetensors"))
    mean, std = stats["plane_mean"].float(), stats["plane_std"].float()
    decoder = load_component(TriplaneDecoder, DecoderConfig, args.decoder, kind=DECODER_KIND)
    rows = {}
    for setting in args.setting or ["default"]:
        changes = {} if setting == "default" else parse_settings(setting.split(","), flag="--setting")
        tag = "default" if setting == "default" else setting.replace("=", "").replace(",", "-")
        planes, figures = [], []
        for seed in SEEDS:
            fit = from_dict(FitConfig, {**dataclasses.asdict(small.fit), **changes, "seed": seed})
            run = Path(f"runs/fitnoise-{tag}-s{seed}")
            metrics = fit_dataset(args.unseen, run, preset=dataclasses.replace(small, fit=fit),
                                  decoder_path=args.decoder, show_progress=False, log=print)
            figures.append(metrics)
            raw = fitted_planes(run, small.triplane.base_resolution)
            planes.append((raw - mean[:, None, None]) / std[:, None, None])
        a, b = planes
        noise = (a - b).pow(2).mean(dim=(0, 1, 3, 4)) / 2            # per channel
        across = a.var(dim=0).mean(dim=(0, 2, 3))
        row = {
            "setting": setting,
            "heldout_psnr_mean": round(sum(m["heldout_psnr_mean"] for m in figures) / len(figures), 2),
            "heldout_ssim_mean": round(sum(m["heldout_ssim_mean"] for m in figures) / len(figures), 4),
            "fit_noise_var": round(noise.mean().item(), 4),
            "across_subject_var": round(across.mean().item(), 4),
            "noise_share": round(noise.mean().item() / across.mean().item(), 3),
            "noise_per_channel": [round(x, 3) for x in noise.tolist()],
            "noise_channel_min": round(noise.min().item(), 3),
            "noise_channel_max": round(noise.max().item(), 3),
        }
        if setting == "default":
            raw = a * std[:, None, None] + mean[:, None, None]
            weights = decoder_channel_weights(raw, decoder, std, generator=torch.Generator().manual_seed(0))
            row["decoder_channel_weights"] = [round(x, 2) for x in weights.tolist()]
            row["weight_min"], row["weight_max"] = round(weights.min().item(), 2), round(weights.max().item(), 2)
            row["noise_weight_correlation"] = round(torch.corrcoef(torch.stack([noise, weights]))[0, 1].item(), 3)
        rows[re.sub(r"\W", "_", tag)] = row     # plain keys: BENCHMARKS.md reads them as dotted paths
        print(setting, row, flush=True)
    write_json(args.out, {"unseen": str(args.unseen), "decoder": str(args.decoder), "seeds": list(SEEDS),
                          "results": rows})


if __name__ == "__main__":
    try:
        main()
    except RodinError as err:
        raise SystemExit(f"error: {err}") from None
