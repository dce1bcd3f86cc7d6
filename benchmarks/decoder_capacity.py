"""Does a bigger shared decoder raise the fitting ceiling? For each variant of the small preset asked,
train the joint stage (decoder + planes of the first subjects of DATA) on the same subjects and
schedule; then fit unseen subjects (UNSEEN) with each frozen decoder at the preset's frozen budget (or
--steps) and record held-out PSNR / SSIM and the frozen stage's speed, in one run.

    .venv/bin/python benchmarks/decoder_capacity.py --data data/small --unseen UNSEEN \
        --variant C16 --variant C32:triplane.channels=32 --variant oct4:decoder.fourier_octaves=4 \
        --joint-rounds 6 --out benchmarks/evals/decoder-capacity.json

A variant is NAME or NAME:SECTION.KEY=VALUE,... over the preset's `triplane`, `decoder` and `fit`
sections (checked like every config: a typo is an error); the decoder's `features` follow the planes'
`channels`. UNSEEN: a dataset no decoder saw, e.g. `rodin data synth --out UNSEEN --subjects 8 --views
32 --resolution 64 --seed 1000` (the subjects of `rodin bench fit`). Run folders go to
runs/capacity-NAME; a second call with --steps reuses their decoders (the ceiling: `--variant
C32:triplane.channels=32 --steps 1500`).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from rodin.config import Preset, from_dict, get_preset, parse_settings
from rodin.errors import ConfigError, RodinError
from rodin.fit.run import fit_dataset
from rodin.io import write_json

SECTIONS = ("triplane", "decoder", "fit")


def variant(base: Preset, spec: str, *, joint_rounds: int, steps: int | None) -> tuple[str, Preset]:
    """(name, preset) for NAME[:SECTION.KEY=VALUE,...]."""
    name, _, settings = spec.partition(":")
    changes: dict[str, dict] = {s: {} for s in SECTIONS}
    for key, value in parse_settings([w for w in settings.split(",") if w], flag="--variant").items():
        section, dot, field = key.partition(".")
        if not dot or section not in SECTIONS:
            raise ConfigError(f"--variant {spec!r}: {key!r} is not SECTION.KEY with SECTION one of "
                              f"{', '.join(SECTIONS)}")
        changes[section][field] = value
    changes["fit"] = {"joint_rounds": joint_rounds, "steps": steps or base.fit.steps, **changes["fit"]}
    built = {s: from_dict(type(getattr(base, s)), {**dataclasses.asdict(getattr(base, s)), **changes[s]})
             for s in SECTIONS}
    built["decoder"] = dataclasses.replace(built["decoder"], features=built["triplane"].channels)
    return name, dataclasses.replace(base, **built)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--unseen", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME[:SECTION.KEY=VALUE,...] (repeatable; default: C16 and C32)")
    parser.add_argument("--joint-rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=None, help="frozen steps per subject (default: the preset's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    small = get_preset("small")
    specs = args.variant or ["C16", "C32:triplane.channels=32"]
    # Every spec is checked before the first (long) run starts.
    variants = [(spec, *variant(small, spec, joint_rounds=args.joint_rounds, steps=args.steps)) for spec in specs]
    rows = {}
    for spec, name, preset in variants:
        run = Path(f"runs/capacity-{name}")
        t0 = time.time()
        joint = fit_dataset(args.data, run, preset=preset, joint_only=True, show_progress=False, log=print)
        joint_s = time.time() - t0         # a finished joint stage (same command earlier) is read, not redone
        metrics = fit_dataset(args.unseen, run / f"unseen-{preset.fit.steps}", preset=preset,
                              decoder_path=run / "decoder", show_progress=False, log=print)
        rows[name] = {
            "spec": spec,
            "joint_s": round(joint_s, 1),
            "joint_subjects": joint.get("subjects_fitted"),
            "joint_heldout_psnr_mean": round(joint["heldout_psnr_mean"], 2),
            "frozen_s": metrics["frozen_s"],
            "subjects_per_min": round(60 * metrics["frozen_subjects"] / metrics["frozen_s"], 2),
            "heldout_psnr_mean": round(metrics["heldout_psnr_mean"], 2),
            "heldout_psnr_min": round(metrics["heldout_psnr_min"], 2),
            "heldout_ssim_mean": round(metrics["heldout_ssim_mean"], 4),
        }
        print(name, rows[name], flush=True)
    write_json(args.out, {"joint_rounds": args.joint_rounds, "data": str(args.data), "unseen": str(args.unseen),
                          "frozen_steps": args.steps or small.fit.steps, "results": rows})


if __name__ == "__main__":
    try:
        main()
    except RodinError as err:
        raise SystemExit(f"error: {err}") from None
