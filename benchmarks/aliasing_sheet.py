"""Held-out views of fitted subjects against their ground truth, for two fit runs of the same subjects
rendered with different supersampling: what aliased ground truth does to a fit (docs/fit_supersampled_truth.png).

    .venv/bin/python benchmarks/aliasing_sheet.py RUN_A RUN_B --labels "1 ray/pixel" "16 rays/pixel" \
        --subjects 0 1 2 --out docs/fit_supersampled_truth.png

Columns per run: held-out ground truth, the fitted render, |error| x4. Rows: subjects (first held-out view).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from rodin.cli.eval import _load_options, _preset
from rodin.cli.export import open_run
from rodin.eval.heldout import render_heldout
from rodin.fit.run import SubjectSource, load_fit_subject

SCALE = 3


def _tiles(run: Path, row: int) -> tuple[list[np.ndarray], float]:
    store, decoder = open_run(run)
    config = json.loads((run / "fit_config.json").read_text())
    preset = _preset(config)
    sid = store.ids[row]
    subject = load_fit_subject(SubjectSource(sid, Path(config["data"]) / sid, store.splits[row]),
                               config=preset.fit, options=_load_options(run, config))
    views = render_heldout(subject, store.get(row)[None], decoder, preset=preset)
    truth, made = views.target[0].clamp(0, 1), views.rendered[0].clamp(0, 1)
    error = ((truth - made).abs() * 4).clamp(0, 1)
    psnr = float(-10 * torch.log10(((truth - made) ** 2).mean()))
    return [(t.numpy() * 255).round().astype(np.uint8) for t in (truth, made, error)], psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+", required=True)
    parser.add_argument("--subjects", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if len(args.labels) != len(args.runs):
        parser.error("one label per run")
    rows = []
    for row in args.subjects:
        cells, notes = [], []
        for run, label in zip(args.runs, args.labels):
            tiles, psnr = _tiles(run, row)
            cells += tiles
            notes.append(f"{label}: {psnr:.1f} dB")
        rows.append((np.concatenate(cells, axis=1), "   ".join(notes)))
    side = rows[0][0].shape[0]
    head = 14
    width = rows[0][0].shape[1] * SCALE
    sheet = Image.new("RGB", (width, len(rows) * (side * SCALE + head) + head), "white")
    draw = ImageDraw.Draw(sheet)
    titles = []
    for label in args.labels:
        titles += [f"truth ({label})", "fitted", "|error| x4"]
    for i, title in enumerate(titles):
        draw.text((i * side * SCALE + 4, 1), title, fill="black")
    y = head
    for image, note in rows:
        sheet.paste(Image.fromarray(image).resize((image.shape[1] * SCALE, side * SCALE), Image.NEAREST), (0, y))
        draw.text((4, y + side * SCALE + 1), note, fill="black")
        y += side * SCALE + head
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
