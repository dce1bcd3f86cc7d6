"""Side by side: held-out fitted planes shrunk to the upsampler's base side, enlarged bicubically and by the
upsampler, beside the fitted planes themselves.

    .venv/bin/python benchmarks/upsampler_sheet.py MODEL --triplanes RUN --data DATA [--subjects 6] --out PNG

MODEL needs a decoder, a semantic encoder and an upsampler. Rows: the last `--subjects` held-out (val/test)
subjects of DATA's index that RUN fitted; columns: bicubic, upsampled (1 step, as sampled), fitted; a view at
20 degrees azimuth and 10 elevation, rendered at 128².
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    from rodin.fit.store import TriplaneStore
    from rodin.pipeline import RodinPipeline
    from rodin.render.cameras import DEFAULT_FOV_X, orbit_cameras
    from rodin.render.volume import occupancy_from_density, render_views
    from rodin.triplane.triplane import resize_planes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--triplanes", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    pipe = RodinPipeline.from_pretrained(args.model)
    up, render = pipe.upsampler, pipe.render
    store = TriplaneStore.open(args.triplanes / "triplanes")
    ids = list(store.ids)
    index = json.loads((args.data / "index.json").read_text())["subjects"]
    held = [e["id"] for e in index if e.get("split") != "train" and e["id"] in ids][-args.subjects:]
    camera = orbit_cameras([20.0], [10.0])
    rows = []
    for k, sid in enumerate(held):
        planes = torch.from_numpy(store.planes[ids.index(sid)]).float()
        low = resize_planes(planes[None], up.config.base_resolution)
        enlarged = resize_planes(low, up.config.unet.resolution, mode=up.config.condition_mode)[0]
        made = up.sample(low, pipe.encode_image(args.data / sid / "portrait.png"),
                         generator=torch.Generator().manual_seed(k))[0]
        tiles = []
        for p in (enlarged, made, planes):
            occupancy = occupancy_from_density(p[None], pipe.decoder, resolution=render.occupancy_resolution,
                                               threshold=render.occupancy_threshold)
            rgb, _, _ = render_views(p, pipe.decoder, camera, DEFAULT_FOV_X, 128, samples=render.samples,
                                     importance=render.importance, occupancy=occupancy)
            tiles.append((rgb[0].clamp(0, 1).numpy() * 255).astype(np.uint8))
        rows.append(np.concatenate(tiles, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.out)
    print(json.dumps({"subjects": held, "out": str(args.out)}))


if __name__ == "__main__":
    main()
