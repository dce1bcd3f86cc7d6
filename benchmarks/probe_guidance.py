"""Prompts' avatars optimised toward what the prompt names, as read by the encoder's attribute probes.

    .venv/bin/python benchmarks/probe_guidance.py MODEL --data DATA [--cases 40] [--coarse 0] [--out F.json]
        [--sheet F.png]

The analogue of CLIP guidance in text-to-3D (Dream Fields): a portrait's avatar gains from being fitted to its
portrait (`rodin.fit.portrait`), and a prompt has no picture, but the semantic encoder has a linear probe per
attribute on its image embedding (`DualEncoder.probe`). So each prompt's avatar (drawn as `rodin eval semantic`
draws it, from prompts of `--cases-seed`, 1 by default so that the evaluation's own stay unseen) is optimised,
decoder frozen, to make the probes read the values the prompt reader reads in the prompt, from `--views`
portrait cameras jittered by up to `--jitter` degrees a step; the views beside and behind the head and the
opacity of random points are kept as the portrait fit keeps them. `--coarse N` optimises a bicubically
enlarged N x N change of the planes instead of every texel (no detail finer than the plane / N). Prints and
writes the judge's `text_attr_acc` of the avatars before and after; `--sheet` draws the first 8 before
(left pair) and after (right pair), at 0 and 30 degrees.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--cases-seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40, help="optimisation steps per avatar")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--weight", type=float, default=0.05, help="of the probes' cross-entropy")
    parser.add_argument("--jitter", type=float, default=15.0, help="degrees of azimuth either way")
    parser.add_argument("--views", type=int, default=2, help="portrait cameras a step")
    parser.add_argument("--side", type=int, default=64, help="render side (enlarged to 64 for the encoder)")
    parser.add_argument("--coarse", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--sheet", type=Path)
    args = parser.parse_args()

    from rodin.data.synth import PORTRAIT_ELEVATION, PORTRAIT_FOV_X, PORTRAIT_TARGET
    from rodin.eval.semantic import _accuracy, _generate, judge_planes, prompt_cases
    from rodin.fit.portrait import _opacity, keep_cameras
    from rodin.io import write_json
    from rodin.pipeline import RodinPipeline
    from rodin.render.cameras import DEFAULT_FOV_X, DEFAULT_RADIUS, camera_rays, orbit_cameras
    from rodin.render.volume import occupancy_from_density, render_rays, render_views, uniform
    from rodin.semantic.dual_encoder import PROBED
    from rodin.semantic.judge import dataset_subjects, load_judge
    from rodin.triplane.sampling import sample_triplane

    pipe = RodinPipeline.from_pretrained(args.model)
    reader, encoder, decoder, render = pipe.reader, pipe.semantic, pipe.decoder, pipe.render
    if reader is None or not hasattr(encoder, "probe"):
        raise SystemExit(f"{args.model}: needs a prompt reader and the dual encoder's probes")
    judge = load_judge(args.model / "judge").eval()
    held = [json.loads((f / "attributes.json").read_text()) for f, split in dataset_subjects(args.data)
            if split != "train"]
    cases = [(named, prompt) for _, named, prompt in prompt_cases(held, args.cases, random.Random(args.cases_seed))]
    prompts = [prompt for _, prompt in cases]
    g = torch.Generator().manual_seed(1)
    latents = torch.cat([reader.draw(prompts[k:k + 16], generator=g) for k in range(0, len(prompts), 16)])
    drawn = _generate(pipe, latents, seed=10_000, batch=16, steps=10, means=pipe.prompt_means(prompts, latents))
    for p in [*encoder.parameters(), *decoder.parameters()]:
        p.requires_grad_(False)

    def score(planes: torch.Tensor) -> dict:
        judged = judge_planes(judge, pipe, planes)
        acc, per = _accuracy([(n, v, j[n]) for (named, _), j in zip(cases, judged) for n, v in named.items()])
        return {"text_attr_acc": acc, "per_attribute": per}

    config = pipe.portrait_fit
    step_length = 2.0 / render.samples
    gen = torch.Generator().manual_seed(0)
    kept_cams = keep_cameras(config.keep_views)
    kept_rays = camera_rays(kept_cams, DEFAULT_FOV_X, 64).reshape(-1)
    started = time.perf_counter()
    guided = []
    for planes, prompt in zip(drawn, prompts):
        reading = reader.read(prompt).named(reader.config.said)
        wanted = {n: PROBED[n].index(v) for n, (v, _) in reading.items() if n in PROBED and v in PROBED[n]}
        occupancy = occupancy_from_density(planes[None], decoder, resolution=render.occupancy_resolution,
                                           threshold=render.occupancy_threshold)
        kept_rgb = render_views(planes, decoder, kept_cams, DEFAULT_FOV_X, 64, samples=config.samples,
                                importance=config.importance, occupancy=occupancy,
                                background=render.background)[0].reshape(-1, 3)
        free = torch.zeros(3 * planes.shape[1], args.coarse, args.coarse) if args.coarse else planes.clone()
        free.requires_grad_(True)
        optimiser = torch.optim.Adam([free], lr=args.lr)

        def current(free: torch.Tensor = free, planes: torch.Tensor = planes) -> torch.Tensor:
            if not args.coarse:
                return free
            change = F.interpolate(free[None], size=planes.shape[-2:], mode="bicubic")[0]
            return planes + change.reshape(planes.shape)

        with torch.enable_grad():
            for _ in range(args.steps if wanted else 0):
                tri = current()
                azimuths = (torch.rand(args.views, generator=gen) * 2 - 1) * args.jitter
                elevations = PORTRAIT_ELEVATION + (torch.rand(args.views, generator=gen) * 2 - 1) * 5
                cams = orbit_cameras(azimuths.tolist(), elevations.tolist(), radius=DEFAULT_RADIUS,
                                     target=PORTRAIT_TARGET)
                rgb = render_rays(tri[None], decoder, camera_rays(cams, PORTRAIT_FOV_X, args.side).reshape(-1),
                                  samples=config.samples, importance=config.importance, occupancy=occupancy,
                                  background=render.background, perturb=True, generator=gen).rgb
                image = rgb.reshape(args.views, args.side, args.side, 3).permute(0, 3, 1, 2)
                if args.side != 64:
                    image = F.interpolate(image, size=(64, 64), mode="bilinear", antialias=True)
                logits = encoder.probe(F.normalize(encoder.image(image), dim=-1))
                loss = args.weight * sum(F.cross_entropy(logits[n], torch.full((args.views,), i))
                                         for n, i in wanted.items())
                chosen = (uniform((config.rays,), gen, tri.device) * len(kept_rays)).long()
                loss = loss + (render_rays(tri[None], decoder, kept_rays[chosen], samples=config.samples,
                                           importance=config.importance, occupancy=occupancy,
                                           background=render.background, perturb=True, generator=gen).rgb
                               - kept_rgb[chosen]).pow(2).mean()
                points = uniform((config.density_points, 3), gen, tri.device) * 2 - 1
                index = torch.zeros(config.density_points, dtype=torch.long)
                now = decoder.density(sample_triplane(tri[None], points, index))
                with torch.no_grad():
                    was = decoder.density(sample_triplane(planes[None], points, index))
                loss = loss + (_opacity(now, step_length) - _opacity(was, step_length)).pow(2).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        with torch.no_grad():
            guided.append(current().detach())
    guided = torch.stack(guided)
    figures = {"model": str(args.model), "settings": {k: str(v) for k, v in vars(args).items()},
               "drawn": score(drawn), "guided": score(guided),
               "seconds_per_avatar": round((time.perf_counter() - started) / len(prompts), 1)}
    print(json.dumps(figures))
    if args.out:
        write_json(args.out, figures)
    if args.sheet:
        from PIL import Image

        from rodin.train.base import render_planes

        rows = [np.concatenate([view for planes in (drawn[k], guided[k]) for view in
                                render_planes(planes, decoder, render, azimuths=[0.0, 30.0], resolution=96)], 1)
                for k in range(min(8, len(prompts)))]
        Image.fromarray(np.concatenate(rows, 0)).save(args.sheet)


if __name__ == "__main__":
    main()
