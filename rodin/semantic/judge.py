"""The attribute judge: a small CNN that reads a rendered view of an avatar and names its attributes.

It referees the semantic figures (does the avatar made from a portrait or a prompt have the right
hair, glasses, ...?) and its pooled penultimate features serve FID/KID. It is trained on ground-truth
views of generated subjects seen from the front half (camera azimuth within ±60° of the face's +z)
plus their portraits, all composited on white, with augmentations that make them look like renders
of fitted or generated tri-planes: blur, noise, speckle, small shifts, zooms, mirror images and
brightness/contrast changes. Never hue: colours are labels.

`hair_colour` is not judged on avatars that show no hair (bald without a beard): the label exists
but nothing in the image carries it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from rodin.data.avatar import (
    BEARDS,
    CLOTH_COLOURS,
    CLOTHING,
    EXPRESSIONS,
    GLASSES,
    HAIR_COLOURS,
    HAIR_STYLES,
    HATS,
    SKIN_NAMES,
)
from rodin.data.nerf import read_transforms
from rodin.data.synth import MARKER, subject_split
from rodin.errors import ConfigError, DataError
from rodin.io import write_json
from rodin.modeling import load_component, save_component
from rodin.semantic.pixel_encoder import square_on_white

KIND = "attribute-judge"
JUDGED: dict[str, tuple[str, ...]] = {
    "hair_style": tuple(HAIR_STYLES),
    "hair_colour": tuple(HAIR_COLOURS),
    "beard": tuple(BEARDS),
    "glasses": tuple(GLASSES),
    "hat": tuple(HATS),
    "clothing": tuple(CLOTHING),
    "clothing_colour": tuple(CLOTH_COLOURS),
    "expression": tuple(EXPRESSIONS),
    "skin": tuple(SKIN_NAMES),
}
FRONT_AZIMUTH = 60.0     # degrees either side of +z that count as a front view
VIEWS = ("front", "all")


@dataclass(frozen=True)
class JudgeConfig:
    """A CNN of stride-2 stages (conv, group norm, SiLU), a linear embedding of its whole last map (where
    a feature lies tells a hat from a shirt), one linear head per attribute. Against global average
    pooling the embedding learns faster (mean held-out accuracy 0.51 against 0.42 after 150 steps) and
    ends level with it (0.60 against 0.59 after 1000 steps, data/small, one core)."""

    image_size: int = 64                          # renders are resized to this (square, on white)
    width: int = 24                               # channels of the first stage (32: twice the time per step)
    multipliers: tuple[int, ...] = (1, 2, 4, 4)   # channels of each stage, times width; each halves the side
    groups: int = 8                               # group norm groups
    embedding: int = 256                          # penultimate features (heads, FID/KID)


def _conv(cin: int, cout: int, stride: int, groups: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(math.gcd(groups, cout), cout), nn.SiLU()]


class AttributeJudge(nn.Module):
    """pixels (B, 3, S, S) in [0, 1] on white -> logits per attribute of JUDGED."""

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        cin = 3
        for i, mult in enumerate(config.multipliers):
            cout = config.width * mult
            layers += _conv(cin, cout, 2, config.groups)
            if i > 0:    # the first stage, at the largest side, has one conv only: it is the costliest
                layers += _conv(cout, cout, 1, config.groups)
            cin = cout
        self.body = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.multipliers)
        if side < 1:
            raise ConfigError(f"image_size {config.image_size} is too small for {len(config.multipliers)} stages")
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, config.embedding), nn.SiLU())
        self.feature_dim = config.embedding
        self.heads = nn.ModuleDict({name: nn.Linear(config.embedding, len(classes))
                                    for name, classes in JUDGED.items()})

    def prepare(self, pixels: Tensor) -> Tensor:
        """uint8 or float (B, 3, H, W) -> floats in [0, 1] at the judge's side (antialiased resize)."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"the judge reads (B, 3, H, W) images, got shape {tuple(pixels.shape)}")
        x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
        side = self.config.image_size
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        return x

    def features(self, pixels: Tensor) -> Tensor:
        """(B, feature_dim) penultimate features (for FID/KID)."""
        return self.embed(self.body(self.prepare(pixels) * 2.0 - 1.0))

    def forward(self, pixels: Tensor) -> dict[str, Tensor]:
        f = self.features(pixels)
        return {name: head(f) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, pixels: Tensor) -> list[dict[str, str]]:
        best = {name: logits.argmax(-1).tolist() for name, logits in self(pixels).items()}
        return [{name: JUDGED[name][best[name][b]] for name in JUDGED} for b in range(len(pixels))]


def load_judge(folder: Path | str) -> AttributeJudge:
    return load_component(AttributeJudge, JudgeConfig, folder, kind=KIND)


# --- data ---------------------------------------------------------------------------------------

@dataclass
class JudgeImages:
    """Images with their labels, held in memory once."""

    pixels: Tensor          # (N, 3, S, S) uint8, composited on white
    labels: Tensor          # (N, len(JUDGED)) class indices in JUDGED order, -1 where not judged
    subjects: list[str]     # subject id of each image
    portrait: Tensor        # (N,) bool: the image is the subject's portrait

    def __len__(self) -> int:
        return len(self.pixels)

    def label_dicts(self) -> list[dict[str, str]]:
        names = list(JUDGED)
        return [{names[a]: JUDGED[names[a]][int(k)] for a, k in enumerate(row) if k >= 0} for row in self.labels]

    def subset(self, keep: Tensor) -> JudgeImages:
        """The images at indices `keep` (or where the boolean mask `keep` holds)."""
        idx = keep.nonzero()[:, 0] if keep.dtype == torch.bool else keep
        return JudgeImages(self.pixels[idx], self.labels[idx], [self.subjects[i] for i in idx.tolist()],
                           self.portrait[idx])


def camera_azimuths(c2w: Tensor) -> Tensor:
    """Azimuth (degrees, in (-180, 180]) of camera positions around the y axis; 0 on +z, 90 on +x."""
    position = c2w[..., :3, 3]
    return torch.rad2deg(torch.atan2(position[..., 0], position[..., 2]))


def subject_labels(attributes: dict, where: str) -> list[int]:
    """Class indices of a subject's attributes.json, in JUDGED order (-1: not judged)."""
    labels = []
    for name, classes in JUDGED.items():
        value = attributes.get(name)
        if name == "hair_colour" and attributes.get("hair_style") == "bald" and attributes.get("beard") == "none":
            labels.append(-1)
        elif value in classes:
            labels.append(classes.index(value))
        else:
            raise DataError(f"{where}: {name} is {value!r}, not one of {', '.join(classes)}; "
                            "the judge reads attributes of generated avatars")
    return labels


def dataset_subjects(data: Path | str) -> list[tuple[Path, str]]:
    """(folder, split) of the complete subjects of a generated dataset (folders holding the marker),
    with the split of index.json where it lists the subject, else the hashed split of its id."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"{data}: no such dataset folder")
    splits: dict[str, str] = {}
    if (data / "index.json").is_file():
        try:
            entries = json.loads((data / "index.json").read_text()).get("subjects") or []
            splits = {e["id"]: e.get("split", "train") for e in entries if isinstance(e, dict) and "id" in e}
        except (ValueError, AttributeError):
            raise DataError(f"{data / 'index.json'}: not a dataset index; regenerate the dataset") from None
    folders = sorted(p.parent for p in data.glob(f"*/{MARKER}"))
    return [(f, splits.get(f.name) or subject_split(f.name)) for f in folders]


def _read_rgb(path: Path, size: int) -> Tensor:
    try:
        with Image.open(path) as image:
            image.load()
            rgb = square_on_white(image, size=size)
    except (FileNotFoundError, UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    return (rgb * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8)


def load_images(data: Path | str, *, splits: Sequence[str] = ("train",), views: str = "front",
                portraits: bool = True, size: int = 64, subjects: int | None = None) -> JudgeImages:
    """The labelled images of the subjects of `splits` (among the first `subjects` complete ones of the
    dataset, or all): their views ("front": camera azimuth within ±FRONT_AZIMUTH of +z; "all") and
    their portraits."""
    if views not in VIEWS:
        raise ConfigError(f"views must be one of {', '.join(VIEWS)} (got {views!r})")
    pixels, labels, ids, portrait = [], [], [], []
    for folder, split in dataset_subjects(data)[:subjects]:
        if split not in splits:
            continue
        t = read_transforms(folder)
        if t.attributes is None:
            raise DataError(f"{folder}: no attributes.json; the judge trains on generated avatars")
        label = subject_labels(t.attributes, str(folder / "attributes.json"))
        c2w = t.world_from_file().float() @ t.c2w.float()
        frames = [p for p, az in zip(t.file_paths, camera_azimuths(c2w).tolist())
                  if views == "all" or abs(az) <= FRONT_AZIMUTH]
        files = [(p, False) for p in frames] + ([(t.portrait, True)] if portraits and t.portrait else [])
        for path, is_portrait in files:
            pixels.append(_read_rgb(path, size))
            labels.append(label)
            ids.append(folder.name)
            portrait.append(is_portrait)
    if not pixels:
        return JudgeImages(torch.zeros(0, 3, size, size, dtype=torch.uint8),
                           torch.zeros(0, len(JUDGED), dtype=torch.long), [], torch.zeros(0, dtype=torch.bool))
    return JudgeImages(torch.stack(pixels), torch.tensor(labels), ids, torch.tensor(portrait))


# --- augmentation -------------------------------------------------------------------------------

def augment(pixels: Tensor, generator: torch.Generator) -> Tensor:
    """Make ground-truth images (B, 3, S, S) in [0, 1] look like renders of tri-planes: mirror, zoom
    ±10% and shift ±5% (white comes in), Gaussian blur (sigma up to 1 px), brightness ±0.06 and
    contrast ±15% (the same for all channels: no hue change), noise (std up to 0.03), speckle."""
    b, _, s, _ = pixels.shape

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(b, *shape, generator=generator)

    theta = torch.zeros(b, 2, 3)
    zoom = uniform(0.9, 1.1)
    mirror = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta[:, 0, 0], theta[:, 1, 1] = mirror / zoom, 1.0 / zoom
    theta[:, :, 2] = uniform(-0.1, 0.1, 2)
    grid = F.affine_grid(theta, [b, 3, s, s], align_corners=False)
    x = 1.0 - F.grid_sample(1.0 - pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    sigma = uniform(0.0, 1.0).clamp_min(0.05)
    taps = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)       # (3B, 5)
    x = x.reshape(1, 3 * b, s, s)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=3 * b)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), kernel[:, None, :, None], groups=3 * b)
    x = x.reshape(b, 3, s, s)

    x = (x - 0.5) * uniform(0.85, 1.15, 1, 1, 1) + 0.5 + uniform(-0.06, 0.06, 1, 1, 1)
    x = x + torch.randn(x.shape, generator=generator) * uniform(0.0, 0.03, 1, 1, 1)
    speckle = torch.rand(b, 1, s, s, generator=generator) < uniform(0.0, 0.01, 1, 1, 1)
    x = torch.where(speckle, torch.rand(x.shape, generator=generator), x)
    return x.clamp(0.0, 1.0)


# --- training and scoring -----------------------------------------------------------------------

def judge_loss(logits: dict[str, Tensor], labels: Tensor) -> Tensor:
    """Mean over attributes of the cross-entropy of the judged images (label -1: not judged)."""
    terms = [F.cross_entropy(logits[name], labels[:, a], ignore_index=-1)
             for a, name in enumerate(JUDGED) if (labels[:, a] >= 0).any()]
    return torch.stack(terms).mean()


@torch.no_grad()
def judge_accuracy(judge: AttributeJudge, images: Tensor, labels: list[dict], *, batch: int = 256) -> dict[str, float]:
    """Per attribute, the fraction of images whose label (where given) the judge names right."""
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    for start in range(0, len(images), batch):
        predicted = judge.predict(images[start:start + batch])
        for guess, truth in zip(predicted, labels[start:start + batch]):
            for name, value in truth.items():
                if name in JUDGED and value is not None:
                    total[name] = total.get(name, 0) + 1
                    correct[name] = correct.get(name, 0) + int(guess[name] == value)
    return {name: correct[name] / total[name] for name in JUDGED if name in total}


def majority_accuracy(train: list[dict], test: list[dict]) -> dict[str, float]:
    """Per attribute, the accuracy on `test` of always naming the most common class of `train`."""
    out = {}
    for name in JUDGED:
        seen = [d[name] for d in train if name in d]
        truth = [d[name] for d in test if name in d]
        if seen and truth:
            common = max(set(seen), key=lambda c: (seen.count(c), c))
            out[name] = sum(v == common for v in truth) / len(truth)
    return out


def train_judge(data: Path | str, out: Path | str, *, steps: int, batch: int = 64, seed: int = 0,
                views: str = "front", subjects: int | None = None, config: JudgeConfig | None = None,
                lr: float = 2e-3, log: Callable[[str], None] = print) -> dict:
    """Train a judge on the train split of a generated dataset, save it into `out` (float16 weights)
    with out/judge_metrics.json, and return those metrics: "accuracy" per attribute on the held-out
    (val and test) subjects' views beside "majority" (the most common training class), the same on
    their portraits, on training views, and the loss of one fixed un-augmented batch before and after.
    `subjects`: use the first that many complete subjects of the dataset only (None: all)."""
    config = config or JudgeConfig()
    if steps < 1 or batch < 1:
        raise ConfigError(f"steps and batch must be positive (got steps={steps}, batch={batch})")
    started, cpu_started = time.perf_counter(), time.process_time()
    train = load_images(data, splits=("train",), views=views, size=config.image_size, subjects=subjects)
    heldout = load_images(data, splits=("val", "test"), views=views, size=config.image_size, subjects=subjects)
    if not len(train):
        raise DataError(f"{data}: no complete training subjects to train the judge on")
    log(f"judge: {len(train)} training images of {len(set(train.subjects))} subjects, "
        f"{len(heldout)} held-out images of {len(set(heldout.subjects))} subjects")

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        judge = AttributeJudge(config)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (
        1.0 + math.cos(math.pi * min(1.0, i / steps))))
    fixed = torch.randperm(len(train), generator=generator)[:batch]

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(judge_loss(judge(train.pixels[fixed]), train.labels[fixed]))

    before = fixed_loss()
    order = torch.randperm(len(train), generator=generator)
    cursor, running = 0, []
    for step in range(steps):
        if cursor + batch > len(order):
            order, cursor = torch.randperm(len(train), generator=generator), 0
        idx = order[cursor:cursor + batch]
        cursor += batch
        loss = judge_loss(judge(augment(train.pixels[idx].float() / 255.0, generator)), train.labels[idx])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(loss.item())
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            log(f"judge step {step + 1}/{steps}: loss {np.mean(running):.3f}")
            running = []
    after = fixed_loss()

    save_component(judge, out, kind=KIND, dtype=torch.float16)
    judge = load_judge(out)                      # score the weights that ship
    views_only, portraits = heldout.subset(~heldout.portrait), heldout.subset(heldout.portrait)
    train_views = train.subset(~train.portrait)
    train_views = train_views.subset(torch.randperm(len(train_views), generator=generator)[:1024])
    train_labels = train.label_dicts()
    metrics = {
        "kind": KIND, "data": str(data), "subjects": subjects, "views": views, "steps": steps, "batch": batch,
        "seed": seed, "lr": lr, "config": asdict(config), "parameters": sum(p.numel() for p in judge.parameters()),
        "train_images": len(train), "train_subjects": len(set(train.subjects)),
        "heldout_images": len(views_only), "heldout_subjects": len(set(heldout.subjects)),
        "fixed_batch_loss": {"before": before, "after": after},
        "accuracy": judge_accuracy(judge, views_only.pixels, views_only.label_dicts()),
        "majority": majority_accuracy(train_labels, views_only.label_dicts()),
        "portrait_accuracy": judge_accuracy(judge, portraits.pixels, portraits.label_dicts()),
        "portrait_majority": majority_accuracy(train_labels, portraits.label_dicts()),
        "train_accuracy": judge_accuracy(judge, train_views.pixels, train_views.label_dicts()),
        "wall_s": round(time.perf_counter() - started, 1), "cpu_s": round(time.process_time() - cpu_started, 1),
    }
    write_json(Path(out) / "judge_metrics.json", metrics)
    return metrics


__all__ = [
    "FRONT_AZIMUTH", "JUDGED", "KIND", "AttributeJudge", "JudgeConfig", "JudgeImages", "augment", "camera_azimuths",
    "dataset_subjects", "judge_accuracy", "judge_loss", "load_images", "load_judge", "majority_accuracy",
    "subject_labels", "train_judge",
]
