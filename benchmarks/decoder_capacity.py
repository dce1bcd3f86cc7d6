"""Does a wider shared decoder raise the fitting ceiling? Train the joint stage (decoder + planes of the
first subjects of DATA) at the small preset's sizes with C channels per plane, for each C asked, on the
same subjects and schedule; then fit unseen subjects (UNSEEN) with each frozen decoder at the preset's
frozen budget (or --steps) and record held-out PSNR / SSIM and the frozen stage's speed, in one run.

    .venv/bin/python benchmarks/decoder_capacity.py --data data/small --unseen UNSEEN --channels 16 32 \
        --joint-rounds 6 --out benchmarks/evals/decoder-capacity.json

UNSEEN: a dataset no decoder saw, e.g. `rodin data synth --out UNSEEN --subjects 8 --views 32
--resolution 64 --seed 1000` (the subjects of `rodin bench fit`). Run folders go to runs/capacity-C*; a
second call with --steps reuses their decoders (the ceiling: `--channels 32 --steps 1500`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from rodin.config import get_preset
from rodin.fit.run import fit_dataset
from rodin.io import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--unseen", type=Path, required=True)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--joint-rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=None, help="frozen steps per subject (default: the preset's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    small = get_preset("small")
    rows = {}
    for channels in args.channels:
        preset = replace(small, triplane=replace(small.triplane, channels=channels),
                         decoder=replace(small.decoder, features=channels),
                         fit=replace(small.fit, joint_rounds=args.joint_rounds, steps=args.steps or small.fit.steps))
        run = Path(f"runs/capacity-C{channels}")
        t0 = time.time()
        joint = fit_dataset(args.data, run, preset=preset, joint_only=True, show_progress=False, log=print)
        joint_s = time.time() - t0         # a finished joint stage (same command earlier) is read, not redone
        metrics = fit_dataset(args.unseen, run / f"unseen-{preset.fit.steps}", preset=preset,
                              decoder_path=run / "decoder", show_progress=False, log=print)
        rows[f"C{channels}"] = {
            "joint_s": round(joint_s, 1),
            "joint_subjects": joint.get("subjects_fitted"),
            "joint_heldout_psnr_mean": round(joint["heldout_psnr_mean"], 2),
            "frozen_s": metrics["frozen_s"],
            "subjects_per_min": round(60 * metrics["frozen_subjects"] / metrics["frozen_s"], 2),
            "heldout_psnr_mean": round(metrics["heldout_psnr_mean"], 2),
            "heldout_psnr_min": round(metrics["heldout_psnr_min"], 2),
            "heldout_ssim_mean": round(metrics["heldout_ssim_mean"], 4),
        }
        print(channels, rows[f"C{channels}"], flush=True)
    write_json(args.out, {"joint_rounds": args.joint_rounds, "data": str(args.data), "unseen": str(args.unseen),
                          "frozen_steps": args.steps or small.fit.steps, "results": rows})


if __name__ == "__main__":
    main()
