"""Where a prompt's attributes get lost on the way to z, without generating a single avatar.

    .venv/bin/python benchmarks/text_latent_probe.py MODEL --data DATA [--prior NAME=DIR ...]
        [--identities IDS] [--k 1,8,32] [--out F.json]

The prompts are those of `rodin eval semantic` (same seed, same held-out subjects of DATA, same
paraphrases); each becomes z in several ways, and linear probes of z (fitted on the z of DATA's training
portraits, as benchmarks/z_probe.py does) read the attributes the prompt names:

- `own_portrait`: z of the portrait of the subject the prompt was written from: what any text route
  could hope for, bounded by what z carries;
- `prior_NAME`: z drawn by a latent prior for the prompt (MODEL/prior, and any --prior), as the
  evaluation draws it;
- `retrieval_K` (with --identities): the mean z of the K training identities of IDS whose captions lie
  nearest the prompt in the shared space, put back on z's sphere; `retrieval_backbone_K` the same search
  in the frozen sentence backbone's space (before the learned text projection); `retrieval_portrait_K`
  the identities whose portraits' z lie nearest the prompt's text embedding (text against image);
- `linear_map` (with --identities): a least-squares linear map from a caption's embedding to its
  identity's z, fitted on IDS, put back on z's sphere.

With --identities, `text_embedding` reads the prompt's own text embedding instead of a z: probes fitted
on the embeddings of the identities' captions (labelled with the subject each describes). It says how
much of what the prompt names the text tower has understood before any route to z begins.

A probe reads z, not an avatar, so these figures sit above `text_attr_acc`; their ratios say which step
loses what.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from z_probe import probe_model

from rodin.config import EncoderTrainConfig, PriorConfig
from rodin.diffusion.prior import KIND as PRIOR_KIND
from rodin.diffusion.prior import LatentPrior
from rodin.eval.semantic import prompt_cases
from rodin.io import write_json
from rodin.modeling import load_component
from rodin.semantic.judge import JUDGED, dataset_subjects, subject_labels
from rodin.semantic.loading import load_semantic
from rodin.semantic.portraits import load_portrait_set
from rodin.train.base import PortraitLatents
from rodin.train.prior import caption_embeddings, portrait_latents


def identity_routes(encoder, texts: torch.Tensor, prompts: list[str], identities: Path, cache: Path,
                    ks: list[int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The routes that search or fit on a set of identities, and what the prompts' embeddings read."""
    portraits = EncoderTrainConfig()
    found = load_portrait_set(identities, split="train", size=max(encoder.image_size, 64), front_degrees=0.0,
                              captions_per_subject=portraits.captions_per_subject, seed=portraits.seed)
    captions = caption_embeddings(encoder, [found], cache, print)[0]              # (N, K, dim)
    pool = portrait_latents(encoder, found)                                       # (N, dim)
    radius = math.sqrt(pool.shape[-1])
    unit = F.normalize(texts, dim=-1)
    scores = {"retrieval": torch.einsum("pd,nkd->pnk", unit, F.normalize(captions, dim=-1)).amax(-1),
              # The CLIP way: the identities whose portraits lie nearest the prompt (text against image).
              "retrieval_portrait": unit @ F.normalize(pool, dim=-1).T}
    if hasattr(encoder, "project_sentences"):
        # The same search in the frozen sentence backbone's own space, before our learned projection.
        from rodin.semantic.text import shared_embedder
        from rodin.train.encoder import sentence_vectors

        flat = [text for wordings in found.captions for text in wordings]
        raw = F.normalize(sentence_vectors(flat, cache, print), dim=-1).view(len(found.captions), len(flat) // len(
            found.captions), -1)
        asked = F.normalize(shared_embedder()(prompts), dim=-1)
        scores["retrieval_backbone"] = torch.einsum("pd,nkd->pnk", asked, raw).amax(-1)
    routes = {}
    # Least squares from a caption's embedding to its subject's z (the conditional mean, if linear).
    n, k = captions.shape[:2]
    flat_text = captions.reshape(n * k, -1)
    x = torch.cat([flat_text, torch.ones(n * k, 1)], 1)
    ridge = torch.linalg.solve(x.T @ x + 1e-2 * torch.eye(x.shape[1]), x.T @ pool.repeat_interleave(k, 0))
    routes["linear_map"] = F.normalize(torch.cat([unit, torch.ones(len(texts), 1)], 1) @ ridge, dim=-1) * radius
    for route, table in scores.items():
        for top_k in ks:
            top = table.topk(top_k, dim=1).indices
            routes[f"{route}_{top_k}"] = F.normalize(pool[top].mean(1), dim=-1) * radius
    # What the prompt's own embedding carries: probes fitted on the identities' caption embeddings
    # (labelled with the subject each describes), read on the prompts' embeddings.
    labels = torch.tensor([subject_labels(a, "identity") for a in found.attributes]).repeat_interleave(k, 0)
    mean, std = flat_text.mean(0), flat_text.std(0).clamp_min(1e-6)
    everyone = torch.ones(n * k, dtype=torch.bool)
    read = {name: probe_model((flat_text - mean) / std, labels[:, a], everyone, len(JUDGED[name]))(
        (texts - mean) / std) for a, name in enumerate(JUDGED)}
    return routes, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--prior", action="append", default=[], help="NAME=DIR of a further latent prior")
    parser.add_argument("--identities", type=Path, help="dataset whose training captions and portraits "
                        "the retrieval routes search and the linear map is fitted on")
    parser.add_argument("--caption-cache", type=Path, help="file that keeps the frozen backbone's vectors of "
                        "the identities' captions between runs (default: a temporary one)")
    parser.add_argument("--k", default="1,8,32", help="identities averaged by the retrieval routes")
    parser.add_argument("--prior-guidance", default="", help="further guidance scales to draw each prior at")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    encoder = load_semantic(args.model / "semantic")
    latents = PortraitLatents(encoder, "semantic")
    subjects = dataset_subjects(args.data)
    paths = [folder / "portrait.png" for folder, _ in subjects]
    z = torch.cat([latents(paths[i:i + 256]) for i in range(0, len(paths), 256)])
    attrs = [json.loads((folder / "attributes.json").read_text()) for folder, _ in subjects]
    labels = torch.tensor([subject_labels(a, str(folder)) for a, (folder, _) in zip(attrs, subjects)])
    train = torch.tensor([split == "train" for _, split in subjects])
    mean, std = z[train].mean(0), z[train].std(0).clamp_min(1e-6)
    probes = {name: probe_model((z - mean) / std, labels[:, a], train, len(JUDGED[name]))
              for a, name in enumerate(JUDGED)}

    held_rows = [i for i, (_, split) in enumerate(subjects) if split != "train"]
    cases = prompt_cases([attrs[i] for i in held_rows], args.prompts, random.Random(args.seed))
    prompts = [p for _, _, p in cases]
    texts = encoder.encode_texts(prompts).cpu()

    routes: dict[str, torch.Tensor] = {"own_portrait": z[[held_rows[row] for row, _, _ in cases]]}
    if any("=" not in p for p in args.prior):
        parser.error("--prior takes NAME=DIR, e.g. --prior identities=runs/cand/prior")
    priors = [("model", args.model / "prior")] + [tuple(p.split("=", 1)) for p in args.prior]
    for name, folder in priors:
        prior = load_component(LatentPrior, PriorConfig, Path(folder), kind=PRIOR_KIND).eval()
        for scale in [None] + [float(v) for v in args.prior_guidance.split(",") if v]:
            g = torch.Generator().manual_seed(args.seed + 1)
            label = f"prior_{name}" + ("" if scale is None else f"_guidance{scale:g}")
            routes[label] = torch.cat([prior.sample(texts[k:k + 16], generator=g, guidance_scale=scale)
                                       for k in range(0, len(texts), 16)])
    text_read = None
    if args.identities:
        cache = args.caption_cache or Path(tempfile.mkdtemp()) / "caption_vectors.safetensors"
        found_routes, text_read = identity_routes(encoder, texts, prompts, args.identities, cache,
                                                  [int(v) for v in args.k.split(",")])
        routes.update(found_routes)

    readings = {route: {name: probes[name]((zs - mean) / std) for name in JUDGED} for route, zs in routes.items()}
    if text_read is not None:
        readings["text_embedding"] = text_read
    figures: dict = {"model": str(args.model), "data": str(args.data), "prompts": len(cases),
                     "identities": str(args.identities or ""), "routes": {}}
    for route, read in readings.items():
        right: dict[str, list[bool]] = {}
        for c, (row, named, _) in enumerate(cases):
            for name in named:
                truth = int(labels[held_rows[row], list(JUDGED).index(name)])
                right.setdefault(name, []).append(int(read[name][c]) == truth)
        total = [v for values in right.values() for v in values]
        figures["mentions"] = {n: len(v) for n, v in right.items()} | {"total": len(total)}
        figures["routes"][route] = {"accuracy": sum(total) / len(total),
                                    "per_attribute": {n: sum(v) / len(v) for n, v in right.items()}}
        print(f"{route:>20}: {sum(total) / len(total):.3f}  " +
              " ".join(f"{n} {sum(v) / len(v):.2f}" for n, v in right.items()), flush=True)
    print(json.dumps(figures), flush=True)
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
