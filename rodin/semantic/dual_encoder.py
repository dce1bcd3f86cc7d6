"""Our CLIP-style dual encoder: portraits and sentences in one space (DESIGN.md, stage 5).

The paper's z is a frozen CLIP image embedding, which lets CLIP text embeddings steer it. No CLIP
weights can be had here, so we train the same kind of space ourselves, contrastively, on our
portraits and captions (`rodin.train.encoder`):

- image tower: a compact CNN over 64 x 64 portraits, trained from scratch;
- text tower: the frozen pretrained MiniLM sentence encoder (`rodin.semantic.text`) and a learned
  projection, so that wording never seen in our captions still lands in the right place.

Both towers end in unit vectors of `dim` dimensions. A linear probe per attribute on the image
embedding is trained beside the contrastive loss (it keeps the space organised by what captions
talk about); it is kept in the weights so that the probes can be inspected, and costs nothing at
inference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rodin.config import DualEncoderConfig
from rodin.data import avatar as a
from rodin.semantic.space import normalise
from rodin.semantic.text import shared_embedder

KIND = "dual-encoder"

# What the probes learn to read off the image embedding (all named in captions).
PROBED: dict[str, tuple[str, ...]] = {
    "hair_style": tuple(a.HAIR_STYLES), "hair_colour": tuple(a.HAIR_COLOURS), "beard": tuple(a.BEARDS),
    "glasses": tuple(a.GLASSES), "hat": tuple(a.HATS), "clothing": tuple(a.CLOTHING),
    "clothing_colour": tuple(a.CLOTH_COLOURS), "expression": tuple(a.EXPRESSIONS), "skin": tuple(a.SKIN_NAMES),
    "eye_colour": tuple(a.EYE_COLOURS),
}


def _stage(cin: int, cout: int, groups: int = 8) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
    )


class ImageTower(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, dim), not yet normalised."""

    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__()
        w = config.width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1), nn.SiLU(),          # S/2
            _stage(w, 2 * w), _stage(2 * w, 4 * w), _stage(4 * w, 6 * w),  # S/4, S/8, S/16
        )
        self.head = nn.Linear(6 * w, config.dim)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        hidden = self.net((pixels - self.mean) * 2.0)
        return self.head(hidden.mean(dim=(2, 3)))


class DualEncoder(nn.Module):
    """Implements `rodin.semantic.space.SemanticEncoder` (plus the training-time pieces)."""

    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.image_size = config.image_size
        self.image = ImageTower(config)
        self.text = nn.Sequential(nn.Linear(config.text_features, config.text_hidden), nn.SiLU(),
                                  nn.Linear(config.text_hidden, config.dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)).log())
        self.probes = nn.ModuleDict({name: nn.Linear(config.dim, len(classes)) for name, classes in PROBED.items()})

    def forward(self, pixels: Tensor, sentence_vectors: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Training pass: unit image vectors, unit text vectors and probe logits of a batch. One call
        through the module, so that a DDP wrapper sees every parameter that takes part."""
        images = normalise(self.image(pixels))
        return images, self.project_sentences(sentence_vectors), self.probe(images)

    # --- the SemanticEncoder protocol -----------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, pixels: Tensor) -> Tensor:
        device = self.logit_scale.device
        return normalise(self.image(pixels.to(device)))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        return self.project_sentences(shared_embedder()(list(texts)))

    # --- pieces -------------------------------------------------------------------------------------
    def project_sentences(self, sentence_vectors: Tensor) -> Tensor:
        """Frozen MiniLM vectors (B, 384) -> unit vectors of the shared space."""
        return normalise(self.text(sentence_vectors.to(self.logit_scale.device)))

    def contrastive_logits(self, images: Tensor, texts: Tensor) -> Tensor:
        """(B, B) similarities of unit image and text vectors, scaled by the learned temperature."""
        scale = self.logit_scale.exp().clamp(max=100.0)
        return scale * images @ texts.T

    def probe(self, image_vectors: Tensor) -> dict[str, Tensor]:
        return {name: head(image_vectors * self.dim ** 0.5) for name, head in self.probes.items()}
