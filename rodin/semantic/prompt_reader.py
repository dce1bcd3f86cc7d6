"""Reading a prompt as attribute values, and z drawn from the portraits that have them.

The latent prior (`rodin.diffusion.prior`) maps a prompt's text embedding to z, but its z carry few of the
attributes a prompt names, while the mean z of a few training portraits that have the named values makes
avatars that show them (BENCHMARKS.md, "Prompts read as attributes"). So a model may carry a
`PromptReader` (MODEL/reader, `rodin train reader`), in two parts:

- the reader: the frozen sentence backbone's token states (`rodin.semantic.text`), pooled by one learned
  attention query per attribute, then a small classifier per attribute over its values and "not said".
  Token states rather than the pooled sentence vector, so that "red hair and a blue top" keeps which
  colour goes with what. It learns from generated captions, whole and partial, that record what they name
  (`rodin.data.avatar.described`); the backbone is what carries it to wording no caption uses;
- the bank: the z of the training portraits, read by the model's semantic encoder as a user's portrait is,
  and their attribute values.

A prompt's z is the renormalised mean of `draws` bank portraits drawn, by seed, from the posterior over the
bank given the reading: an attribute the prompt names weighs each portrait by the reader's probability of
that portrait's value against a uniform guess; an attribute it leaves open weighs nothing. A prompt that
names nothing known draws from the whole bank, i.e. an unconditional avatar.

A reader may also hold value planes (`rodin train steering`): per value, the mean tri-plane of a fit run's
training subjects that have it. The planes a prompt's avatar starts from are then steered toward each value
the prompt names (`steer`): along that value's mean difference d (with it minus without it) until their
projection on d lies `config.steer` differences past the typical subject without it. Starting planes are
regression means, pale and average where the judge and the eye need a clear hair colour or a hat's brim
(BENCHMARKS.md, "Prompts steered toward what they name").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rodin.data import avatar as a
from rodin.errors import ConfigError, DataError
from rodin.semantic.text import FEATURES, check_prompt, shared_embedder

# The attributes a prompt can ask for, with their values (those the attribute judge reads).
READ_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "hair_style": tuple(a.HAIR_STYLES), "hair_colour": tuple(a.HAIR_COLOURS), "beard": tuple(a.BEARDS),
    "glasses": tuple(a.GLASSES), "hat": tuple(a.HATS), "clothing": tuple(a.CLOTHING),
    "clothing_colour": tuple(a.CLOTH_COLOURS), "expression": tuple(a.EXPRESSIONS), "skin": tuple(a.SKIN_NAMES),
}


MIN_VALUE_SUBJECTS = 5     # fitted subjects needed on each side of a value to steer toward it


def default_vocabulary() -> tuple[str, ...]:
    return tuple(f"{name}={value}" for name, values in READ_ATTRIBUTES.items() for value in values)


def split_vocabulary(vocabulary: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """"name=value" words to {name: values} in their order."""
    table: dict[str, list[str]] = {}
    for word in vocabulary:
        name, sep, value = word.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"prompt reader: vocabulary word {word!r} is not NAME=VALUE")
        table.setdefault(name, []).append(value)
    return {name: tuple(values) for name, values in table.items()}


@dataclass(frozen=True)
class PromptReaderConfig:
    """A reader's shape, its bank's size, and what the bank was read with."""

    vocabulary: tuple[str, ...] = default_vocabulary()   # "attribute=value", grouped by attribute
    features: int = FEATURES      # width of the sentence backbone's token states
    hidden: int = 128             # width of the attention pooling and the classifiers
    dim: int = 64                 # size of z
    bank: int = 0                 # portraits in the bank
    draws: int = 4                # bank portraits averaged into one z (1: a real portrait's z; more: surer)
    said: float = 0.5             # an attribute counts as named when P(not said) is below 1 - this
    clauses: bool = True          # read a prompt clause by clause (`prompt_clauses`), each attribute from the
                                  # clause that names it most surely
    text_head_share: float = 0.5  # share of the base model's text-head planes in a prompt's starting planes
                                  # (the rest: its mean-planes head's planes of the drawn z)
    encoder_digest: str = ""      # sha256 of the semantic encoder the bank's portraits were read with
    plane_shape: tuple[int, ...] = ()     # (3, C, H, W) of the value planes (the base model's side); () for none
    plane_subjects: int = 0       # fitted subjects the value planes were measured on
    steer: float = 1.5            # how far a prompt's starting planes go toward each value it names, in mean
                                  # differences from the typical subject without it (0: not steered)

    def __post_init__(self) -> None:
        table = split_vocabulary(self.vocabulary)
        if any(len(values) < 2 for values in table.values()):
            raise ConfigError("prompt reader: every attribute needs at least two values")
        if self.draws < 1:
            raise ConfigError(f"prompt reader: draws must be at least 1, got {self.draws}")
        if not 0.0 <= self.text_head_share <= 1.0:
            raise ConfigError(f"prompt reader: text_head_share must lie in [0, 1], got {self.text_head_share}")
        if not 0.0 < self.said < 1.0:
            raise ConfigError(f"prompt reader: said must lie between 0 and 1, got {self.said}")
        if not (math.isfinite(self.steer) and self.steer >= 0.0):
            raise ConfigError(f"prompt reader: steer must be a number >= 0, got {self.steer}")


@dataclass(frozen=True)
class Reading:
    """What a prompt names: per attribute, P(not said) and the value probabilities given that it is said."""

    unsaid: dict[str, float]
    values: dict[str, dict[str, float]]

    def named(self, said: float = 0.5) -> dict[str, tuple[str, float]]:
        """{attribute: (most likely value, its probability)} of the attributes read as named."""
        out = {}
        for name, p_unsaid in self.unsaid.items():
            if 1.0 - p_unsaid >= said:
                value, p = max(self.values[name].items(), key=lambda kv: kv[1])
                out[name] = (value, p)
        return out


class PromptReader(nn.Module):
    """Attribute classifiers over the backbone's token states, and the bank of portraits' z."""

    def __init__(self, config: PromptReaderConfig) -> None:
        super().__init__()
        self.config = config
        self.table = split_vocabulary(config.vocabulary)
        self.names = tuple(self.table)
        h = config.hidden
        self.key = nn.Linear(config.features, h)
        self.value = nn.Linear(config.features, h)
        self.queries = nn.Parameter(torch.randn(len(self.names), h) / math.sqrt(h))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(h), nn.Linear(h, h), nn.GELU(), nn.Linear(h, len(values) + 1))
            for values in self.table.values())
        self.register_buffer("bank_latents", torch.zeros(config.bank, config.dim))
        # Per bank portrait, the index of its value of each attribute; -1 where unknown.
        self.register_buffer("bank_codes", torch.full((config.bank, len(self.names)), -1, dtype=torch.long))
        if config.plane_shape:
            # Per vocabulary word, the mean tri-plane of the subjects with that value (half precision: 6 MB at
            # the small preset), how many they were, and the mean of them all.
            words = len(config.vocabulary)
            self.register_buffer("value_planes", torch.zeros(words, *config.plane_shape, dtype=torch.float16))
            self.register_buffer("value_counts", torch.zeros(words, dtype=torch.long))
            self.register_buffer("planes_mean", torch.zeros(*config.plane_shape))
        else:
            self.value_planes = self.value_counts = self.planes_mean = None

    def forward(self, states: Tensor, mask: Tensor) -> list[Tensor]:
        """Token states (B, T, F) and mask (B, T) -> per attribute, logits (B, values + 1); the last class
        is "not said"."""
        keys, values = self.key(states), self.value(states)
        scores = torch.einsum("bth,ah->bat", keys, self.queries) / math.sqrt(keys.shape[-1])
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        pooled = torch.einsum("bat,bth->bah", scores.softmax(-1), values)
        return [head(pooled[:, i]) for i, head in enumerate(self.heads)]

    @torch.no_grad()
    def probabilities(self, prompts: list[str]) -> list[Tensor]:
        """Per attribute, (B, values + 1) probabilities of each prompt. Read clause by clause (with
        `config.clauses`), an attribute takes the reading of the clause most sure that it is named."""
        prompts = [check_prompt(p) for p in prompts]
        pieces = [prompt_clauses(p) if self.config.clauses else [p] for p in prompts]
        texts = [text for clauses in pieces for text in clauses]
        states, mask = shared_embedder().token_states(texts)
        owner = torch.tensor([k for k, clauses in enumerate(pieces) for _ in clauses])
        out = []
        for logits in self(states.to(self.key.weight), mask):
            p = logits.softmax(-1).float()
            chosen = torch.empty(len(prompts), p.shape[-1])
            for k in range(len(prompts)):
                rows = p[owner == k]
                chosen[k] = rows[int(rows[:, -1].argmin())]
            out.append(chosen)
        return out

    def read(self, prompt: str) -> Reading:
        """What one prompt names."""
        probabilities = self.probabilities([prompt])
        unsaid, values = {}, {}
        for name, p in zip(self.names, probabilities):
            p = p[0].double()
            unsaid[name] = float(p[-1])
            said = p[:-1] / p[:-1].sum().clamp_min(1e-12)
            values[name] = {v: float(q) for v, q in zip(self.table[name], said)}
        return Reading(unsaid=unsaid, values=values)

    def value_means(self, name: str, value: str) -> tuple[Tensor, Tensor] | None:
        """(mean tri-plane of the measured subjects with `value` of `name`, mean of those without), or None
        where the reader holds no value planes or too few subjects on either side."""
        word = f"{name}={value}"
        if self.value_planes is None or word not in self.config.vocabulary:
            return None
        k = self.config.vocabulary.index(word)
        n, total = int(self.value_counts[k]), self.config.plane_subjects
        if n < MIN_VALUE_SUBJECTS or total - n < MIN_VALUE_SUBJECTS:
            return None
        with_value = self.value_planes[k].float()
        return with_value, (total * self.planes_mean.float() - n * with_value) / (total - n)

    @torch.no_grad()
    def steer(self, means: Tensor, readings: list[dict[str, tuple[str, float]]],
              normalise: Callable[[Tensor], Tensor], *, skip: frozenset[str] = frozenset()) -> Tensor:
        """Starting planes (B, C, H, 3W) in the base model's normalised units, each moved toward the values its
        reading names (`Reading.named`), one attribute after the other, except the attributes in `skip`:
        along d = normalise(with) - normalise(without) until the projection of (planes - without) on d
        reaches `config.steer` (1: the typical subject with the value). Planes already past it stay."""
        target = self.config.steer
        if self.value_planes is None or target <= 0:
            return means
        out = means.clone()
        for row, named in enumerate(readings):
            for name, (value, _) in named.items():
                pair = None if name in skip else self.value_means(name, value)
                if pair is None:
                    continue
                with_value, without = normalise(torch.stack(pair).to(out))
                d = with_value - without
                reached = float(((out[row] - without) * d).sum() / (d * d).sum().clamp_min(1e-12))
                out[row] += max(0.0, target - reached) * d
        return out

    def bank_log_weights(self, prompts: list[str]) -> Tensor:
        """(B, bank) log posterior weights of the bank's portraits given each prompt (unnormalised)."""
        if self.config.bank == 0:
            raise DataError("this prompt reader has an empty bank of portraits; rebuild it with "
                            "`rodin train reader --data DATA --out MODEL`")
        weights = torch.zeros(len(prompts), self.config.bank, dtype=torch.float64)
        for i, p in enumerate(self.probabilities(prompts)):
            p = p.double()
            said = 1.0 - p[:, -1:]
            values = p[:, :-1] / p[:, :-1].sum(-1, keepdim=True).clamp_min(1e-12)
            # Likelihood ratio of the prompt against a uniform guess: 1 when the attribute is left open.
            ratio = (1.0 - said) + said * values * values.shape[-1]
            codes = self.bank_codes[:, i]
            known = codes >= 0
            factor = torch.ones(len(prompts), self.config.bank, dtype=torch.float64)
            factor[:, known] = ratio[:, codes[known]]
            weights += factor.clamp_min(1e-12).log()
        return weights

    def draw(self, prompts: list[str], *, generator: torch.Generator | None = None,
             draws: int | None = None) -> Tensor:
        """z (B, dim) of each prompt: the mean of `draws` bank portraits drawn from its posterior, brought
        back to the bank's typical norm."""
        draws = min(draws or self.config.draws, self.config.bank)
        log_weights = self.bank_log_weights(prompts)
        probabilities = (log_weights - log_weights.max(-1, keepdim=True).values).exp()
        rows = torch.multinomial(probabilities.float(), draws, replacement=False, generator=generator)
        chosen = self.bank_latents.float()[rows]                  # (B, draws, dim)
        mean = chosen.mean(1)
        norm = chosen.norm(dim=-1).mean(1, keepdim=True)
        return torch.nn.functional.normalize(mean, dim=-1, eps=1e-8) * norm


# Commas, "and", and before the clothes ("with red hair in a green hoodie": the hoodie is not red).
_CLAUSE_BREAKS = re.compile(r",|;| and | as well as | plus |(?= wearing )|(?= in an? )|(?= dressed in )",
                            flags=re.IGNORECASE)
_SUBJECT_WORDS = ("a", "an", "the", "someone", "somebody")


def prompt_clauses(prompt: str) -> list[str]:
    """A prompt cut at commas, "and", and before what is worn: "someone with red hair in a green hoodie" ->
    ["someone with red hair", "a person in a green hoodie"]. A clause that does not start with a subject
    ("a", "someone", ...) gets "a person" before it, so that it reads like the short prompts the reader
    learnt from; reading each alone
    keeps one clause's words from colouring another's attribute (BENCHMARKS.md, "Prompts read as
    attributes")."""
    clauses = [c.strip() for c in _CLAUSE_BREAKS.split(prompt) if c.strip()]
    if not clauses:
        return [prompt]
    return [c if c.split()[0].lower() in _SUBJECT_WORDS else f"a person {c}" for c in clauses]


def attribute_targets(named: list[dict[str, str]], table: dict[str, tuple[str, ...]]) -> Tensor:
    """(B, attributes) class indices of what each caption names; the "not said" class where it names
    nothing of that attribute (or a value the reader does not know)."""
    rows = []
    for said in named:
        row = []
        for name, values in table.items():
            value = said.get(name)
            row.append(values.index(value) if value in values else len(values))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


def bank_codes(attributes: list[dict], table: dict[str, tuple[str, ...]]) -> Tensor:
    """(N, attributes) value indices of labelled portraits; -1 where a value is missing or unknown."""
    return torch.tensor([[values.index(attrs[name]) if attrs.get(name) in values else -1
                          for name, values in table.items()] for attrs in attributes], dtype=torch.long)


def describe_reading(named: dict[str, tuple[str, float]]) -> str:
    """"hair colour red 0.98, glasses round 0.91" (or a note that nothing was read)."""
    if not named:
        return "nothing the model knows (an avatar drawn at random)"
    return ", ".join(f"{name.replace('_', ' ')} {value} {p:.2f}" for name, (value, p) in named.items())
