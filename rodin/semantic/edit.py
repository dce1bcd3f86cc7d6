"""Editing z in words: z' = z + s * (T(target) - T(source)), normalised as CLIP directions are.

The direction of an edit such as "with red hair" is the difference between the text embeddings of
"a person with red hair" and "a person", made a unit vector; z moves by `strength` times it on the
sphere of unit embeddings and goes back to the base model's scale. An edit that points nowhere
near anything the encoder learned (no attribute phrase comes close) is refused with examples,
since it would only push z off into noise.

Optionally (`EditDirections(prior=...)`, off in the pipeline), the direction is taken where portraits'
z live: the mean of the latent prior's draws for the target sentence minus the mean for the source,
with the same noise for both. On the shipped encoder a raw text difference has a cosine of only
0.26-0.56 with that direction (text and image embeddings sit apart), yet edits along it succeeded less
often (0.16 against 0.28, preservation alike; `benchmarks/edit_directions.py`, BENCHMARKS.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rodin.data import avatar as a
from rodin.errors import DataError
from rodin.semantic.space import SemanticEncoder, embedding_from_latent, latent_from_embedding, normalise
from rodin.semantic.text import check_prompt

SOURCE = "a person"
# Below this cosine to every known attribute direction, an edit names nothing the model knows. Measured on
# the shipped encoder: known edits 0.91-1.0, paraphrases ("with crimson locks") 0.78, while "qwerty zxcv",
# "with a spaceship", "the quick brown fox", "as a robot" and "older" reach only 0.63-0.71.
MIN_KNOWN_SIMILARITY = 0.74
EXAMPLES = "'with red hair', 'wearing glasses', 'smiling', 'with a beard', 'in a blue hoodie'"


def edit_texts(edit: str) -> tuple[str, str]:
    """(source, target) sentences of an edit: a phrase is attached to "a person"; a whole description
    ("a man with a beard") is taken as it is."""
    edit = check_prompt(edit)
    lowered = edit.lower()
    if lowered.startswith(("a ", "an ", "the ")):
        return SOURCE, edit
    return SOURCE, f"{SOURCE} {edit}"


def attribute_phrases() -> list[str]:
    """One phrase per attribute value, in plain words: the directions an edit may follow."""
    phrases = [f"with {c} hair" for c in a.HAIR_COLOURS]
    phrases += ["bald", "with a buzz cut", "with short hair", "with long hair", "with hair in a bun",
                "with curly hair", "with an afro", "with a ponytail", "with a mohawk"]
    phrases += ["with a full beard", "with stubble", "clean-shaven"]
    phrases += ["wearing round glasses", "wearing square glasses", "wearing sunglasses", "without glasses"]
    phrases += ["wearing a baseball cap", "wearing a beanie", "without a hat"]
    phrases += [f"in a {c} {k}" for c in a.CLOTH_COLOURS for k in ("t-shirt", "hoodie", "suit")]
    phrases += ["in a turtleneck", "in a polo shirt", "smiling", "with an open mouth", "with a neutral expression"]
    phrases += [f"with {s} skin" for s in a.SKIN_NAMES] + [f"with {c} eyes" for c in a.EYE_COLOURS]
    return phrases


class EditDirections:
    """Edit directions of one encoder (mapped through its latent prior when given), with the known
    attribute directions to check edits against."""

    def __init__(self, encoder: SemanticEncoder, *, prior=None, min_similarity: float = MIN_KNOWN_SIMILARITY,
                 prior_draws: int = 16) -> None:
        self.encoder = encoder
        self.prior = prior
        self.prior_draws = prior_draws
        self.min_similarity = min_similarity
        self._directions: dict[str, Tensor] = {}
        phrases = attribute_phrases()
        texts = encoder.encode_texts([SOURCE] + [f"{SOURCE} {p}" for p in phrases]).cpu()
        self.known = normalise(texts[1:] - texts[:1])

    def direction(self, edit: str) -> Tensor:
        """The unit direction (D,) of an edit; a DataError if it names nothing the model knows."""
        if edit not in self._directions:
            self._directions[edit] = self._direction(edit)
        return self._directions[edit]

    def _direction(self, edit: str) -> Tensor:
        source, target = edit_texts(edit)
        texts = self.encoder.encode_texts([source, target]).cpu()
        delta = texts[1] - texts[0]
        if float(delta.norm()) < 1e-6:
            raise DataError(f"the edit {edit!r} changes nothing the model can see; try {EXAMPLES}")
        delta = normalise(delta)
        if float((self.known @ delta).max()) < self.min_similarity:
            raise DataError(f"the edit {edit!r} names nothing this model knows about avatars; try {EXAMPLES}")
        if self.prior is None:
            return delta
        return self._through_prior(texts)

    @torch.no_grad()
    def _through_prior(self, texts: Tensor) -> Tensor:
        """normalise(mean z | target - mean z | source), the draws paired by their starting noise."""
        draws = []
        for text in texts:
            generator = torch.Generator().manual_seed(0)
            z = self.prior.sample(text[None].repeat(self.prior_draws, 1), generator=generator)
            draws.append(embedding_from_latent(z.float().cpu()).mean(0))
        return normalise(draws[1] - draws[0])

    def apply(self, latent: Tensor, edit: str, *, strength: float = 1.0) -> Tensor:
        """z (B, D) -> z' (B, D) on the same sphere."""
        moved = embedding_from_latent(latent.float()) + float(strength) * self.direction(edit).to(latent.device)
        return latent_from_embedding(moved)

