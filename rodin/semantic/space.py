"""The shared image-text space that z lives in (DESIGN.md, stage 5).

Every semantic encoder, ours (`rodin.semantic.dual_encoder`) or a user's CLIP
(`rodin.semantic.clip_adapter`), answers the same two questions: where a portrait lies, and where a
sentence lies, as unit vectors of one space. Stage 2 is conditioned on `latent_from_embedding` of the
portrait's embedding; edits move it along text directions (`edit_direction`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class SemanticEncoder(Protocol):
    """Portraits and sentences into one space of unit vectors."""

    dim: int                      # size of the embeddings
    image_size: int               # portraits are read at this side (pixels, square)

    def encode_images(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) floats in [0, 1], background white -> (B, dim) unit vectors."""
        ...

    def encode_texts(self, texts: list[str]) -> Tensor:
        """B sentences -> (B, dim) unit vectors."""
        ...


def normalise(vectors: Tensor) -> Tensor:
    return torch.nn.functional.normalize(vectors.float(), dim=-1, eps=1e-8)


def latent_from_embedding(embedding: Tensor) -> Tensor:
    """The z the diffusion models read: the unit embedding scaled to norm sqrt(dim), so that its
    components have about unit size whatever the dimension."""
    return normalise(embedding) * embedding.shape[-1] ** 0.5


def embedding_from_latent(latent: Tensor) -> Tensor:
    return normalise(latent)
