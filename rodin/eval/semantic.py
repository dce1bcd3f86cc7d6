"""`rodin eval semantic`: does the avatar have what its portrait, prompt or edit asked for?

The attribute judge (`rodin.semantic.judge`) reads renders of generated avatars from three views
around the front (azimuth -30, 0, 30 at 10 degrees elevation; class probabilities averaged):

- portrait_attr_acc: avatars generated from held-out subjects' portraits carry the subject's
  attributes (mean over subjects and judged attributes);
- text_attr_acc: avatars generated from prompts carry the 1-3 attributes each prompt names; the
  prompts are written with templates and words that never occur in the training captions;
- edit_success / edit_preservation: avatars of held-out portraits edited toward an attribute value
  they lack ("with pink hair") show that value, and keep the judge's reading of the other attributes
  (compared with the unedited avatar drawn from the same noise).

The judge's own accuracy on the same subjects' ground-truth portraits is reported beside: the
ceiling that generated avatars can reach by this measure. Every figure also comes over what the avatar's
front shows (`*_shown`): hair hidden under a hat is not judged there (`_shown`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rodin.errors import DataError
from rodin.semantic.judge import JUDGED, AttributeJudge

JUDGE_AZIMUTHS = (-30.0, 0.0, 30.0)
JUDGE_ELEVATION = 10.0

# --- prompts in words the captions never use ------------------------------------------------------
_COLOUR_WORDS = {
    "black": ["black", "raven-black", "coal-black"], "dark brown": ["dark brown", "deep brown", "espresso brown"],
    "brown": ["brown", "mid-brown", "hazelnut brown"], "auburn": ["auburn", "russet"],
    "ginger": ["ginger", "carrot-orange", "fiery orange"], "blonde": ["blonde", "flaxen", "sandy yellow"],
    "platinum": ["platinum", "ice-blonde"], "grey": ["grey", "ash-grey", "steel grey"],
    "white": ["white", "pure white", "snowy"], "blue": ["blue", "cobalt blue", "electric blue"],
    "pink": ["pink", "bubblegum pink", "rose pink"], "green": ["green", "emerald green", "lime green"],
    "purple": ["purple", "lavender", "plum-coloured"],
}
_CLOTH_WORDS = {
    "red": ["red", "scarlet", "crimson"], "orange": ["orange", "tangerine"], "yellow": ["yellow", "lemon-yellow"],
    "green": ["green", "emerald", "forest green"], "teal": ["teal", "blue-green"], "blue": ["blue", "royal blue"],
    "navy": ["navy", "midnight blue"], "purple": ["purple", "plum"], "pink": ["pink", "rose"],
    "brown": ["brown", "chocolate"], "black": ["black", "jet"], "grey": ["grey", "charcoal"],
    "white": ["white", "ivory"], "beige": ["beige", "khaki", "sand-coloured"],
}
_STYLE_CLAUSES = {
    "bald": ["who has no hair at all", "with a completely hairless scalp"],
    "buzz": ["with hair clipped very close to the scalp", "with a military-style clipped haircut"],
    "short": ["whose hair is kept short", "with a short, tidy haircut"],
    "long": ["whose hair falls past the shoulders", "with hair reaching well below the ears"],
    "bun": ["with the hair gathered into a knot on top of the head", "wearing a topknot"],
    "curly": ["with tightly coiled ringlets", "with springy, frizzy hair"],
    "afro": ["sporting a big rounded afro hairstyle", "with natural hair in a large round shape"],
    "ponytail": ["with the hair pulled back into a tail", "with hair tied at the back of the head"],
    "mohawk": ["with a punk-style strip of hair down the middle", "with a spiky punk crest of hair"],
}
_OTHER_CLAUSES = {
    ("beard", "full"): ["who has a big, dense beard", "with lots of facial hair"],
    ("beard", "stubble"): ["with a scruffy, unshaved jaw", "with a rough shadow of short whiskers"],
    ("glasses", "round"): ["who wears circular eyeglasses", "with little round lenses on the nose"],
    ("glasses", "square"): ["who wears boxy eyeglasses", "with angular frames on the nose"],
    ("glasses", "sunglasses"): ["with tinted shades over the eyes", "hiding the eyes behind dark lenses"],
    ("hat", "cap"): ["who has a ball cap on", "with a peaked sports cap on the head"],
    ("hat", "beanie"): ["with a knitted winter hat", "wearing a snug wool toque"],
    ("expression", "smile"): ["who looks happy and cheerful", "beaming with joy"],
    ("expression", "open"): ["gasping in astonishment", "with jaw dropped in shock"],
    ("expression", "neutral"): ["with a blank, expressionless face", "keeping a straight face"],
}
_SUBJECTS = ["someone", "an individual", "a human", "a character", "a figure"]


def paraphrase(named: dict[str, str], rng: random.Random) -> str:
    """A prompt naming exactly the attributes in `named`, worded unlike any training caption."""
    clauses = []
    for name, value in named.items():
        if name == "hair_colour":
            word = rng.choice(_COLOUR_WORDS[value])
            clauses.append(rng.choice([f"whose hair is {word}", f"with hair dyed or grown {word}",
                                       f"with {word} locks"]))
        elif name == "hair_style":
            clauses.append(rng.choice(_STYLE_CLAUSES[value]))
        elif name == "clothing_colour":
            word = rng.choice(_CLOTH_WORDS[value])
            clauses.append(rng.choice([f"dressed in {word} clothes", f"whose top is {word}",
                                       f"wearing a {word} garment"]))
        elif name == "skin":
            clauses.append(rng.choice([f"with a {value} complexion", f"whose skin tone is {value}"]))
        else:
            clauses.append(rng.choice(_OTHER_CLAUSES[(name, value)]))
    rng.shuffle(clauses)
    return f"{rng.choice(_SUBJECTS)} " + ", ".join(clauses[:-1]) + (" and " if len(clauses) > 1 else "") + clauses[-1]


def _nameable(attrs: dict) -> list[str]:
    names = ["hair_colour", "hair_style", "clothing_colour", "expression", "skin"]
    names += [n for n in ("beard", "glasses", "hat") if attrs[n] != "none"]
    if attrs["hair_style"] == "bald":
        names.remove("hair_colour")
    return names


def prompt_cases(attributes: list[dict], count: int, rng: random.Random) -> list[tuple[int, dict, str]]:
    """(subject row, named attributes, paraphrased prompt) of `count` prompts, each naming 1-3 attributes of
    a subject drawn from `attributes`."""
    cases = []
    for _ in range(count):
        row = rng.randrange(len(attributes))
        names = rng.sample(_nameable(attributes[row]), k=rng.randint(1, 3))
        named = {n: attributes[row][n] for n in names}
        cases.append((row, named, paraphrase(named, rng)))
    return cases


# --- edits ------------------------------------------------------------------------------------------
_EDITS: list[tuple[str, str, str]] = (
    [("hair_colour", c, f"with {c} hair") for c in ("black", "blonde", "ginger", "blue", "pink", "white", "green")]
    + [("glasses", "sunglasses", "wearing sunglasses"), ("glasses", "round", "wearing round glasses"),
       ("hat", "beanie", "wearing a beanie"), ("hat", "cap", "wearing a baseball cap"),
       ("beard", "full", "with a full beard"), ("expression", "smile", "smiling"),
       ("hair_style", "long", "with long hair"), ("hair_style", "bald", "bald")]
    + [("clothing_colour", c, f"in a {c} top") for c in ("red", "yellow", "green", "blue", "black", "white")]
)


def pick_edit(attrs: dict, rng: random.Random) -> tuple[str, str, str]:
    """An edit toward a value the subject does not have (and that makes sense for it)."""
    options = [e for e in _EDITS if attrs.get(e[0]) != e[1]]
    if attrs.get("hair_style") == "bald":
        options = [e for e in options if e[0] != "hair_colour"]
    if attrs.get("hair_style") in ("bun", "afro", "mohawk"):
        options = [e for e in options if e[0] != "hat"]
    return rng.choice(options)


# --- judging ----------------------------------------------------------------------------------------
def judge_planes(judge: AttributeJudge, pipe, planes: torch.Tensor, *, resolution: int = 64) -> list[dict[str, str]]:
    """The judge's reading of each tri-plane (B, 3, C, H, W) from the views around the front."""
    return judge_renders(judge, pipe.decoder, pipe.render, planes, resolution=resolution)


@torch.no_grad()
def judge_renders(judge: AttributeJudge, decoder, render, planes: torch.Tensor, *,
                  resolution: int = 64) -> list[dict[str, str]]:
    """`judge_planes` with the decoder and render settings given apart from a pipeline (fitted planes)."""
    from rodin.train.base import render_planes

    probabilities = []
    for one in planes:
        views = render_planes(one, decoder, render, azimuths=list(JUDGE_AZIMUTHS), resolution=resolution)
        pixels = torch.from_numpy(views).permute(0, 3, 1, 2).float() / 255.0
        logits = judge(pixels)
        probabilities.append({k: v.softmax(-1).mean(0) for k, v in logits.items()})
    return [{name: JUDGED[name][int(p[name].argmax())] for name in JUDGED} for p in probabilities]


def _generate(pipe, latents: torch.Tensor, *, seed: int, batch: int, steps: int | None = None,
              guidance_scale: float | None = None, means: torch.Tensor | None = None) -> torch.Tensor:
    """Base-model tri-planes for each z, row k drawn with the noise of seed + k (as `pipe.sample` would);
    `means` (prompts' text-head planes) replace the mean-planes head's."""
    planes = []
    for start in range(0, len(latents), batch):
        chunk = latents[start:start + batch]
        noise_seeds = range(seed + start, seed + start + len(chunk))
        planes.append(sample_batch(pipe, chunk, noise_seeds, steps=steps, guidance_scale=guidance_scale,
                                   mean=None if means is None else means[start:start + batch]))
    return torch.cat(planes)


def sample_batch(pipe, latents: torch.Tensor, seeds, *, steps: int | None = None,
                 guidance_scale: float | None = None, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Several avatars in one batched sampling run; each row's noise is the one its seed gives alone."""
    base = pipe.base
    u = base.config.unet
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn(1, u.channels, u.resolution, 3 * u.resolution, generator=g) for g in generators])
    return base.sample(latents, noise=noise, steps=steps, guidance_scale=guidance_scale, mean=mean)


def _accuracy(pairs: list[tuple[str, str, str]]) -> tuple[float, dict[str, float]]:
    """pairs of (attribute, wanted, judged) -> overall and per-attribute accuracy."""
    per: dict[str, list[bool]] = {}
    for name, wanted, got in pairs:
        per.setdefault(name, []).append(wanted == got)
    overall = float(np.mean([ok for _, w, g in pairs for ok in [w == g]])) if pairs else float("nan")
    return overall, {k: float(np.mean(v)) for k, v in per.items()}


def evaluate_semantic(pipe, judge: AttributeJudge, data: Path, *, subjects: int = 100, prompts: int = 100,
                      edits: int = 100, strength: float = 1.0, seed: int = 0, batch: int = 16,
                      include_training: bool = False, steps: int | None = None,
                      guidance_scale: float | None = None, portrait_steps: int | None = None,
                      log: Callable[[str], None] = print) -> dict:
    """The figures of the module docstring over the held-out subjects of `data` (all of them with
    `include_training`, for data the model never saw). Portraits' avatars, edited or not, are fitted to their
    portraits for `portrait_steps` (default: the model's) as `pipe(image=...)` fits them; the drawn avatars'
    figure is kept beside (`portrait_attr_acc_drawn`)."""
    from rodin.semantic.judge import dataset_subjects
    from rodin.semantic.pixel_encoder import load_portrait

    if pipe.semantic is None or pipe.base is None:
        raise DataError(f"{pipe.path}: needs a semantic encoder and a base model (`rodin train encoder`, "
                        "`rodin train base`)")
    held = [(folder, json.loads((folder / "attributes.json").read_text()))
            for folder, split in dataset_subjects(data) if include_training or split != "train"]
    if len(held) < 2:
        raise DataError(f"{data}: {len(held)} held-out subjects; the evaluation needs held-out portraits")
    rng = random.Random(seed)
    figures: dict = {}

    chosen = held[:subjects]
    portraits = torch.stack([load_portrait(f / "portrait.png", size=64) for f, _ in chosen])
    truth = [attrs for _, attrs in chosen]
    judged_truth = judge.predict(portraits)
    gt_pairs = [(n, t[n], j[n]) for t, j in zip(truth, judged_truth) for n in JUDGED if _judged(t, n)]
    figures["judge_gt_acc"], _ = _accuracy(gt_pairs)
    pair_attrs = [t for t in truth for n in JUDGED if _judged(t, n)]     # the subject of each portrait pair
    figures["judge_gt_acc_shown"], figures["shown_pairs"] = _shown_accuracy(gt_pairs, pair_attrs)

    log(f"portraits: {len(chosen)} held-out subjects")
    latents = torch.cat([pipe.encode_image(f / "portrait.png") for f, _ in chosen])

    def generate(z: torch.Tensor, *, seed: int, means: torch.Tensor | None = None) -> torch.Tensor:
        return _generate(pipe, z, seed=seed, batch=batch, steps=steps, guidance_scale=guidance_scale, means=means)

    originals = generate(latents, seed=seed)
    fit_steps = pipe.portrait_fit.steps if portrait_steps is None else int(portrait_steps)
    fit = None
    if fit_steps > 0:
        def fit(planes: torch.Tensor, rows: list[int], *, noise_seed: int) -> torch.Tensor:
            """Each drawn avatar fitted to its own portrait, as `pipe(image=...)` does."""
            return torch.stack([pipe.fit_portrait(p, chosen[row][0] / "portrait.png", steps=fit_steps,
                                                  seed=noise_seed + k) for k, (p, row) in enumerate(zip(planes, rows))])

        judged = judge_planes(judge, pipe, originals)
        pairs = [(n, t[n], j[n]) for t, j in zip(truth, judged) for n in JUDGED if _judged(t, n)]
        figures["portrait_attr_acc_drawn"], figures["portrait_per_attribute_drawn"] = _accuracy(pairs)
        figures["portrait_attr_acc_drawn_shown"], _ = _shown_accuracy(pairs, pair_attrs)
        log(f"portraits: fitting {len(chosen)} avatars to their portraits ({fit_steps} steps each)")
        originals = fit(originals, list(range(len(chosen))), noise_seed=seed)
    judged = judge_planes(judge, pipe, originals)
    pairs = [(n, t[n], j[n]) for t, j in zip(truth, judged) for n in JUDGED if _judged(t, n)]
    figures["portrait_attr_acc"], figures["portrait_per_attribute"] = _accuracy(pairs)
    figures["portrait_attr_acc_shown"], _ = _shown_accuracy(pairs, pair_attrs)
    figures["portrait_cases"] = len(chosen)
    figures["portrait_steps"] = fit_steps

    log(f"prompts: {prompts}")
    cases = [(named, prompt) for _, named, prompt in prompt_cases([attrs for _, attrs in held], prompts, rng)]
    g = torch.Generator().manual_seed(seed + 1)
    prompts_text = [p for _, p in cases]
    if pipe.reader is not None:        # z from the portraits that have what each prompt names
        text_latents = torch.cat([pipe.reader.draw(prompts_text[k:k + batch], generator=g)
                                  for k in range(0, len(prompts_text), batch)])
    else:
        texts = pipe.semantic.encode_texts(prompts_text).cpu()
        text_latents = torch.cat([pipe.prior.sample(texts[k:k + batch], generator=g)
                                  for k in range(0, len(texts), batch)])
    text_means = pipe.prompt_means(prompts_text, text_latents)     # None: the mean-planes head's
    judged = judge_planes(judge, pipe, generate(text_latents, seed=seed + 10_000, means=text_means))
    pairs = [(n, v, j[n]) for (named, _), j in zip(cases, judged) for n, v in named.items()]
    figures["text_attr_acc"], figures["text_per_attribute"] = _accuracy(pairs)
    figures["text_attr_acc_shown"], figures["text_shown_pairs"] = _shown_accuracy(
        pairs, [named for named, _ in cases for _ in named])
    figures["text_cases"] = len(cases)
    figures["text_examples"] = [p for _, p in cases[:5]]

    log(f"edits: {edits} at strength {strength}")
    cases = edit_cases(truth, edits, rng)
    edited, _ = edit_figures(pipe, judge, latents, cases, strength=strength, generate=generate, seed=seed, fit=fit,
                             truth=truth)
    figures.update(edited)
    figures["edit_strength"] = strength
    figures["sample_steps"] = steps or pipe.base.config.diffusion.sample_steps
    figures["cases_from"] = "all subjects" if include_training else "held-out subjects"
    figures["guidance_scale"] = (pipe.base.config.diffusion.guidance_scale if guidance_scale is None
                                 else guidance_scale)
    return figures


def edit_cases(truth: list[dict], count: int, rng: random.Random) -> list[tuple[int, str, str, str]]:
    """(row, attribute, value, edit text) for `count` edits of the subjects in `truth`, in turn."""
    cases = []
    for k in range(count):
        row = k % len(truth)
        cases.append((row, *pick_edit(truth[row], rng)))
    return cases


def kept_attributes(edited: str) -> list[str]:
    """The attributes an edit of `edited` should leave alone: all others, except that an edit of the hair's
    style or colour may change the other (a bald head has no colour)."""
    return [n for n in JUDGED if n != edited and not (edited.startswith("hair") and n.startswith("hair"))]


def edit_figures(pipe, judge: AttributeJudge, latents: torch.Tensor, cases: list[tuple[int, str, str, str]], *,
                 strength: float, generate: Callable[..., torch.Tensor], seed: int = 0,
                 judged_before: list[dict] | None = None,
                 fit: Callable[..., torch.Tensor] | None = None,
                 truth: list[dict] | None = None) -> tuple[dict, list[dict]]:
    """Success and preservation of `cases` (`edit_cases`) applied to the z's `latents` at `strength`; both
    avatars of an edit start from the same noise. Returns the figures and the judge's reading of the
    unedited avatars, which a caller trying several strengths or directions can pass back. With `fit`
    (planes, rows, noise_seed= -> planes fitted to those rows' portraits) the unedited avatars are fitted and
    the edited ones refitted to them outside what the edit changes, as `pipe.edit` does (`pipe.refit_edit`).
    With `truth` (the subjects' attributes, indexed by the cases' rows) both figures also come over what the
    avatars show (`_shown`, before and after the edit)."""
    noise_seed = seed + 20_000
    rows = [row for row, *_ in cases]
    before = torch.stack([latents[row] for row in rows])
    drawn = fitted = None
    if fit is not None:             # portraits' avatars fitted to them, and their edits refitted
        drawn = generate(before, seed=noise_seed)
        fitted = fit(drawn, rows, noise_seed=noise_seed)
        judged_before = judge_planes(judge, pipe, fitted)
    elif judged_before is None:
        judged_before = judge_planes(judge, pipe, generate(before, seed=noise_seed))
    changes = [pipe.edit_planes(text, strength=strength) for *_, text in cases]
    if all(c is not None for c in changes):       # plane edits: z stays, the head's planes move
        after = torch.stack([latents[row] for row, *_ in cases])
        with torch.no_grad():
            means = pipe.base.mean_planes(after) + torch.cat(changes)
    else:
        after = torch.cat([pipe.edit_latent(latents[row:row + 1], text, strength=strength)
                           for row, _, _, text in cases])
        means = None
    planes_after = generate(after, seed=noise_seed, means=means)
    if fitted is not None:
        planes_after = torch.stack([pipe.refit_edit(f, d, a, seed=noise_seed + k)
                                    for k, (f, d, a) in enumerate(zip(fitted, drawn, planes_after))])
    judged_after = judge_planes(judge, pipe, planes_after)
    success, kept, success_shown, kept_shown = [], [], [], []
    for (row, name, value, _), was, now in zip(cases, judged_before, judged_after):
        success.append(now[name] == value)
        others = kept_attributes(name)
        kept.extend(now[n] == was[n] for n in others)
        if truth is not None:
            asked = {**truth[row], name: value}
            if _shown(asked, name):
                success_shown.append(now[name] == value)
            kept_shown.extend(now[n] == was[n] for n in others if _shown(truth[row], n) and _shown(asked, n))
    figures = {"edit_success": float(np.mean(success)), "edit_preservation": float(np.mean(kept)),
               "edit_cases": len(cases)}
    if truth is not None:
        figures.update(edit_success_shown=float(np.mean(success_shown)) if success_shown else float("nan"),
                       edit_shown_cases=len(success_shown),
                       edit_preservation_shown=float(np.mean(kept_shown)) if kept_shown else float("nan"))
    return figures, judged_before


def evaluate_judge(judge: AttributeJudge, data: Path, *, run: Path | None = None, render=None,
                   base_resolution: int | None = None, subjects: int | None = None) -> dict:
    """How far the referee can be trusted, on the held-out subjects of `data`: its accuracy per attribute
    on their ground-truth front views and portraits, beside always naming the training split's most
    common class; with a fit run of that data, also on renders of their fitted tri-planes (at
    `base_resolution`, what the base model learns to draw) read as `evaluate_semantic` reads avatars.
    That last figure is the most portrait_attr_acc can reach with this judge and this fit. Every overall
    figure is pooled over (image, attribute) pairs, as `evaluate_semantic`'s are."""
    from rodin.semantic.judge import dataset_subjects, load_images, majority_accuracy

    size = judge.config.image_size
    held = load_images(data, splits=("val", "test"), views="front", size=size, subjects=subjects)
    if not len(held):
        raise DataError(f"{data}: no complete held-out (val/test) subjects to score the judge on")
    listed = dataset_subjects(data)
    train_labels = [json.loads((f / "attributes.json").read_text()) for f, split in listed if split == "train"]
    views, portraits = held.subset(~held.portrait), held.subset(held.portrait)
    figures: dict = {"data": str(data), "heldout_subjects": len(set(held.subjects))}
    for name, part in (("views", views), ("portraits", portraits)):
        if len(part):
            truth = part.label_dicts()
            judged = [guess for start in range(0, len(part), 256)
                      for guess in judge.predict(part.pixels[start:start + 256])]
            pairs = [(n, t[n], j[n]) for t, j in zip(truth, judged) for n in t]
            figures[f"{name}_acc"], figures[f"{name}_per_attribute"] = _accuracy(pairs)
            figures[f"{name}_majority"] = majority_accuracy(train_labels, truth)
    if run is not None:
        folders = {f.name: f for f, _ in listed}
        figures.update(_judge_fitted(judge, folders, Path(run), render=render, base_resolution=base_resolution,
                                     subjects=set(held.subjects)))
    return figures


def _judge_fitted(judge: AttributeJudge, folders: dict[str, Path], run: Path, *, render,
                  base_resolution: int | None, subjects: set[str]) -> dict:
    from rodin.config import DecoderConfig
    from rodin.fit.run import DECODER_KIND
    from rodin.fit.store import TriplaneStore
    from rodin.modeling import load_component
    from rodin.triplane.decoder import TriplaneDecoder
    from rodin.triplane.triplane import resize_planes

    store = TriplaneStore.open(run / "triplanes")
    rows = [i for i, (sid, done) in enumerate(zip(store.ids, store.done)) if done and sid in subjects]
    if not rows:
        raise DataError(f"{run}: none of the dataset's held-out subjects is fitted in this run")
    decoder = load_component(TriplaneDecoder, DecoderConfig, run / "decoder", kind=DECODER_KIND)
    truth = [json.loads((folders[store.ids[i]] / "attributes.json").read_text()) for i in rows]
    judged = []
    for start in range(0, len(rows), 16):
        planes = store.get(rows[start:start + 16]).float()
        if base_resolution:
            planes = resize_planes(planes, base_resolution)
        judged += judge_renders(judge, decoder, render, planes)
    pairs = [(n, t[n], j[n]) for t, j in zip(truth, judged) for n in JUDGED if _judged(t, n)]
    overall, per = _accuracy(pairs)
    return {"fitted_acc": overall, "fitted_per_attribute": per, "fitted_subjects": len(rows),
            "fitted_resolution": base_resolution or store.planes.shape[-1], "run": str(run)}


def planes_attribute_accuracy(judge: AttributeJudge, decoder, render, planes: torch.Tensor,
                              truth: list[dict]) -> float:
    """How many of their subjects' attributes the judge reads in renders of tri-planes (one per subject in
    `truth`): the measure of what a set of planes carries, for probes that make planes other than samples."""
    judged = judge_renders(judge, decoder, render, planes)
    return _accuracy([(k, t[k], j[k]) for t, j in zip(truth, judged) for k in JUDGED if _judged(t, k)])[0]


def _judged(attrs: dict, name: str) -> bool:
    return not (name == "hair_colour" and attrs.get("hair_style") == "bald" and attrs.get("beard") == "none")


def _shown(attrs: dict, name: str) -> bool:
    """Whether the front of an avatar with `attrs` (a subject's attributes, or the part a prompt names)
    shows attribute `name`. The generator cuts hair away above a hat's rim: under a hat only long hair
    hangs into view, and the hair's colour shows only there or in a beard. The judge reads such hidden
    hair near chance on ground truth (`benchmarks/judge_visibility.py`), so figures over what is shown
    measure the avatar, where the full figures also count the judge's guesses."""
    if name not in ("hair_style", "hair_colour"):
        return True
    style = attrs.get("hair_style")
    hidden = attrs.get("hat", "none") != "none" and style != "long"
    if name == "hair_style":
        return not hidden
    has_beard = attrs.get("beard", "none") != "none"
    return has_beard or not (hidden or style == "bald")


def _shown_accuracy(pairs: list[tuple[str, str, str]], attrs: list[dict]) -> tuple[float, int]:
    """`_accuracy` over the pairs whose attribute `_shown` says the avatar shows (attrs: one per pair)."""
    kept = [pair for pair, a in zip(pairs, attrs) if _shown(a, pair[0])]
    return _accuracy(kept)[0], len(kept)
