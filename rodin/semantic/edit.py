"""Editing z in words ("with red hair"), along directions measured on labelled portraits or, without
them, along raw text directions.

Raw text: the direction is the difference between the text embeddings of "a person with red hair" and
"a person", made a unit vector; z moves by `strength` times it on the sphere of unit embeddings and
goes back to the base model's scale. Text and image embeddings sit apart in a contrastive space, so
this moves other attributes too.

Labelled (`LabelledEdits`, MODEL/edits, `rodin train edits`): for every known phrase, the difference
between the mean portrait embedding of training subjects that have what the phrase names and the mean
of those that do not. An edit's text direction picks phrases by a sharp softmax of its cosines to
theirs, so paraphrases find their phrase, and z moves by `strength` times `gain` times the picked
labelled difference. On held-out portraits this is what the judge sees succeed (BENCHMARKS.md, "Edits
along labelled directions").

Phrases are picked in the frozen sentence backbone's space (MiniLM, `rodin.semantic.text`), not in the
encoder's: the contrastive text tower, trained on captions that name every attribute at once, hardly tells
"in a green top" from "with green hair", while the backbone does (BENCHMARKS.md, "Routing edits by the
sentence backbone"). `LabelledEditsConfig.routing = "encoder"` picks them as before.

Labelled edits may also carry plane directions (`rodin train edits --triplanes RUN`): per phrase, the mean
tri-plane of the fit run's training subjects that have what it names minus the mean of the others, at the
base model's resolution. With them the pipeline adds `strength` times `plane_gain` times the picked plane
direction to the planes the base model starts from (its mean-planes head's) and leaves z alone: the edit
shows more often and the rest stays as well as when z moved (BENCHMARKS.md, "Edits in the planes").

Either way, an edit that points nowhere near anything the encoder learned (no attribute phrase comes
close) is refused with examples, since it would only push z off into noise.

Optionally (`EditDirections(prior=...)`, measured worse and unused), the direction is taken where
portraits' z live: the mean of the latent prior's draws for the target sentence minus the mean for the
source, with the same noise for both. Edits along it succeeded less often than raw text (0.16 against
0.28, preservation alike; `benchmarks/edit_directions.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from rodin.data import avatar as a
from rodin.errors import ConfigError, DataError
from rodin.semantic.space import SemanticEncoder, embedding_from_latent, latent_from_embedding, normalise
from rodin.semantic.text import check_prompt, shared_embedder

SOURCE = "a person"
# Below this cosine to every known attribute direction, an edit names nothing the model knows. Measured on
# the shipped encoder: known edits 0.91-1.0, paraphrases ("with crimson locks") 0.78, while "qwerty zxcv",
# "with a spaceship", "the quick brown fox", "as a robot" and "older" reach only 0.63-0.71.
MIN_KNOWN_SIMILARITY = 0.74
MIN_LABELLED_SUBJECTS = 5   # portraits needed on each side of an attribute to measure its direction
ROUTINGS = ("sentence", "encoder")
EXAMPLES = "'with red hair', 'wearing glasses', 'smiling', 'with a beard', 'in a blue hoodie'"


def edit_texts(edit: str) -> tuple[str, str]:
    """(source, target) sentences of an edit: a phrase is attached to "a person"; a whole description
    ("a man with a beard") is taken as it is."""
    edit = check_prompt(edit)
    lowered = edit.lower()
    if lowered.startswith(("a ", "an ", "the ")):
        return SOURCE, edit
    return SOURCE, f"{SOURCE} {edit}"


def _labelled_phrases() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    hair_styles = [("bald", "bald"), ("with a buzz cut", "buzz"), ("with short hair", "short"),
                   ("with long hair", "long"), ("with hair in a bun", "bun"), ("with curly hair", "curly"),
                   ("with an afro", "afro"), ("with a ponytail", "ponytail"), ("with a mohawk", "mohawk")]
    pairs = [(f"with {c} hair", [("hair_colour", c)]) for c in a.HAIR_COLOURS]
    pairs += [(p, [("hair_style", v)]) for p, v in hair_styles]
    pairs += [("with a full beard", [("beard", "full")]), ("with stubble", [("beard", "stubble")]),
              ("clean-shaven", [("beard", "none")])]
    pairs += [("wearing round glasses", [("glasses", "round")]), ("wearing square glasses", [("glasses", "square")]),
              ("wearing sunglasses", [("glasses", "sunglasses")]), ("without glasses", [("glasses", "none")])]
    pairs += [("wearing a baseball cap", [("hat", "cap")]), ("wearing a beanie", [("hat", "beanie")]),
              ("without a hat", [("hat", "none")])]
    pairs += [(f"in a {c} {k}", [("clothing_colour", c), ("clothing", k)])
              for c in a.CLOTH_COLOURS for k in ("t-shirt", "hoodie", "suit")]
    pairs += [(f"dressed in {c} clothing", [("clothing_colour", c)]) for c in a.CLOTH_COLOURS]
    pairs += [("in a turtleneck", [("clothing", "turtleneck")]), ("in a polo shirt", [("clothing", "polo")]),
              ("smiling", [("expression", "smile")]), ("with an open mouth", [("expression", "open")]),
              ("with a neutral expression", [("expression", "neutral")])]
    pairs += [(f"with {s} skin", [("skin", s)]) for s in a.SKIN_NAMES]
    pairs += [(f"with {c} eyes", [("eye_colour", c)]) for c in a.EYE_COLOURS]
    return tuple((phrase, tuple(named)) for phrase, named in pairs)


# One phrase per attribute value, in plain words, with the (attribute, value) pairs of the dataset's
# attributes.json that it names: the directions an edit may follow.
LABELLED_PHRASES = _labelled_phrases()


def attribute_phrases() -> list[str]:
    return [phrase for phrase, _ in LABELLED_PHRASES]


@dataclass(frozen=True)
class LabelledEditsConfig:
    """What a set of labelled directions was made from, so that a stale one is noticed."""

    dim: int = 64                                             # the embedding size of the encoder
    phrases: tuple[str, ...] = tuple(attribute_phrases())     # one direction per phrase, in this order
    routing: str = "sentence"     # where phrases are picked: "sentence" (the frozen backbone) or "encoder"
    temperature: float = 30.0     # sharpness of the softmax that picks phrases, in the encoder's space
    sentence_temperature: float = 100.0   # the same in the sentence backbone's space
    gain: float = 2.0             # strength 1 moves z by this many mean differences
    encoder_digest: str = ""      # sha256 of the semantic encoder's weights the portraits were read with
    subjects: int = 0             # labelled portraits the directions were measured on
    plane_shape: tuple[int, ...] = ()     # (3, C, H, W) of the plane directions; () for none
    plane_gain: float = 2.0       # strength 1 moves the planes by this many mean differences
    plane_subjects: int = 0       # fitted subjects the plane directions were measured on

    def __post_init__(self) -> None:
        if self.routing not in ROUTINGS:
            raise ConfigError(f"labelled edits: routing {self.routing!r} is not one of {', '.join(ROUTINGS)}")

    @property
    def sharpness(self) -> float:
        return self.sentence_temperature if self.routing == "sentence" else self.temperature


class LabelledEdits(nn.Module):
    """Per known phrase, where portraits having what it names sit against those that do not: the mean
    embedding of training portraits with each named (attribute, value) minus the mean of the others,
    summed over the phrase's pairs. A phrase the data had too few portraits of either side for is zero."""

    def __init__(self, config: LabelledEditsConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("directions", torch.zeros(len(config.phrases), config.dim))
        if config.plane_shape:
            self.register_buffer("plane_directions", torch.zeros(len(config.phrases), *config.plane_shape))
        else:
            self.plane_directions = None

    @property
    def known(self) -> Tensor:
        """(P,) True where the data held the phrase's attributes on both sides."""
        return self.directions.abs().sum(-1) > 0

    def direction(self, text_direction: Tensor, similarity: Tensor) -> Tensor:
        """An edit's direction from its unit text direction (D,) and that direction's cosines to each
        phrase's (P,): the phrases' labelled directions weighed by a sharp softmax of the cosines; the
        weight of phrases the data could not measure goes along the text direction itself."""
        weights = torch.softmax(self.config.sharpness * similarity.float(), dim=-1)
        known = self.known
        labelled = self.config.gain * (weights[known] @ self.directions[known].float())
        return labelled + weights[~known].sum() * text_direction.float()

    def plane_direction(self, similarity: Tensor) -> Tensor | None:
        """The tri-plane change (3, C, H, W) of an edit whose text direction has these cosines to each
        phrase's (P,): the phrases' plane directions weighed as `direction` weighs theirs (an unmeasured
        phrase's weight adds nothing). None without plane directions."""
        if self.plane_directions is None:
            return None
        weights = torch.softmax(self.config.sharpness * similarity.float(), dim=-1)
        flat = self.plane_directions.float().flatten(1)
        return (weights @ flat).reshape(self.config.plane_shape)


@torch.no_grad()
def plane_edits(edits: LabelledEdits, planes: Iterable[tuple[Tensor, list[dict]]], *,
                min_subjects: int = MIN_LABELLED_SUBJECTS) -> LabelledEdits:
    """A copy of `edits` with plane directions measured from chunks of (tri-planes (B, 3, C, H, W), their
    attributes.json dicts), streamed so that any number of fitted subjects fits in memory."""
    labelled = dict(LABELLED_PHRASES)
    pairs = sorted({pair for phrase in edits.config.phrases for pair in labelled.get(phrase, ())})
    total, count, sums, counts = None, 0, {}, dict.fromkeys(pairs, 0)
    for chunk, attributes in planes:
        chunk = chunk.double()
        total = chunk.sum(0) if total is None else total + chunk.sum(0)
        count += len(chunk)
        for name, value in pairs:
            has = torch.tensor([attrs.get(name) == value for attrs in attributes])
            if has.any():
                sums[(name, value)] = sums.get((name, value), 0) + chunk[has].sum(0)
                counts[(name, value)] += int(has.sum())
    if total is None:
        raise ValueError("no planes to measure plane directions on")
    config = replace(edits.config, plane_shape=tuple(total.shape), plane_subjects=count)
    out = LabelledEdits(config)
    out.directions.copy_(edits.directions)
    for row, phrase in enumerate(config.phrases):
        change = torch.zeros_like(total)
        for pair in labelled.get(phrase, ()):
            n = counts[pair]
            if n < min_subjects or count - n < min_subjects:
                change = None
                break
            change += sums[pair] / n - (total - sums[pair]) / (count - n)
        if change is not None and labelled.get(phrase):
            out.plane_directions[row] = change.float()
    return out


def labelled_edits(embeddings: Tensor, attributes: list[dict], *, encoder_digest: str = "",
                   min_subjects: int = MIN_LABELLED_SUBJECTS, **config) -> LabelledEdits:
    """Measure the directions of `LabelledEdits` from unit portrait embeddings (N, D) and their
    attributes.json dicts. A pair missing from the attributes counts as absent (other data may label less)."""
    if len(attributes) != embeddings.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {len(attributes)} attribute sets")
    edits = LabelledEdits(LabelledEditsConfig(dim=embeddings.shape[1], encoder_digest=encoder_digest,
                                              subjects=len(attributes), **config))
    embeddings = normalise(embeddings)
    labelled = dict(LABELLED_PHRASES)
    for row, phrase in enumerate(edits.config.phrases):
        total = torch.zeros(embeddings.shape[1])
        for name, value in labelled.get(phrase, ()):
            has = torch.tensor([attrs.get(name) == value for attrs in attributes])
            if int(has.sum()) < min_subjects or int((~has).sum()) < min_subjects:
                total = None
                break
            total += embeddings[has].mean(0) - embeddings[~has].mean(0)
        if total is not None and labelled.get(phrase):
            edits.directions[row] = total
    return edits


def _text_directions(encode, phrases) -> Tensor:
    """(P, D) unit directions from "a person" to "a person PHRASE" for each phrase, by `encode`."""
    texts = encode([SOURCE] + [f"{SOURCE} {p}" for p in phrases]).cpu()
    return normalise(texts[1:] - texts[:1])


class EditDirections:
    """Edit directions of one encoder (taken from labelled portraits, or mapped through its latent prior,
    when given), with the known attribute directions to check edits against."""

    def __init__(self, encoder: SemanticEncoder, *, labelled: LabelledEdits | None = None, prior=None,
                 min_similarity: float = MIN_KNOWN_SIMILARITY, prior_draws: int = 16) -> None:
        if labelled is not None and prior is not None:
            raise ValueError("give labelled directions or a prior, not both")
        if labelled is not None and labelled.config.dim != encoder.dim:
            raise DataError(f"the labelled edit directions are {labelled.config.dim}-d but the encoder makes "
                            f"{encoder.dim}-d embeddings; remake them with `rodin train edits`")
        self.encoder = encoder
        self.labelled = labelled
        self.prior = prior
        self.prior_draws = prior_draws
        self.min_similarity = min_similarity
        self._directions: dict[str, Tensor] = {}
        self._planes: dict[str, Tensor | None] = {}
        self._routed: dict[str, Tensor] = {}
        self.known = _text_directions(encoder.encode_texts, attribute_phrases())
        if labelled is not None:
            self._route = encoder.encode_texts if labelled.config.routing == "encoder" else shared_embedder()
            self._labelled_texts = _text_directions(self._route, labelled.config.phrases)

    def direction(self, edit: str) -> Tensor:
        """The direction (D,) of an edit (a unit vector unless labelled); a DataError if it names nothing
        the model knows."""
        if edit not in self._directions:
            self._directions[edit] = self._direction(edit)
        return self._directions[edit]

    def _text_direction(self, edit: str) -> Tensor:
        """The unit text direction of an edit, checked against the known attribute directions."""
        source, target = edit_texts(edit)
        texts = self.encoder.encode_texts([source, target]).cpu()
        delta = texts[1] - texts[0]
        if float(delta.norm()) < 1e-6:
            raise DataError(f"the edit {edit!r} changes nothing the model can see; try {EXAMPLES}")
        delta = normalise(delta)
        if float((self.known @ delta).max()) < self.min_similarity:
            raise DataError(f"the edit {edit!r} names nothing this model knows about avatars; try {EXAMPLES}")
        return delta

    def plane_direction(self, edit: str) -> Tensor | None:
        """The tri-plane change (3, C, H, W) of an edit at strength 1, where the labelled directions carry
        plane directions (`plane_edits`); None otherwise."""
        if self.labelled is None or self.labelled.plane_directions is None:
            return None
        if edit not in self._planes:
            self._text_direction(edit)         # refuses an edit that names nothing the model knows
            self._planes[edit] = self.labelled.plane_direction(self._routing_similarity(edit))
        return self._planes[edit]

    def reading(self, edit: str, *, top: int = 2, least: float = 0.05) -> list[tuple[str, float]]:
        """The labelled phrases an edit was read as, with their weights (the `top` heaviest of at least
        `least`): what to tell a user whose edit did something unexpected. Empty without labelled edits."""
        if self.labelled is None:
            return []
        self._text_direction(edit)
        weights = torch.softmax(self.labelled.config.sharpness * self._routing_similarity(edit).float(), dim=-1)
        best = weights.topk(min(top, len(weights)))
        return [(self.labelled.config.phrases[int(i)], float(w)) for w, i in zip(best.values, best.indices)
                if float(w) >= least]

    def _routing_similarity(self, edit: str) -> Tensor:
        """(P,) cosines of the edit's text direction to each labelled phrase's, in the routing space."""
        if edit not in self._routed:        # z, plane and reading of one edit share one encoding
            texts = self._route(list(edit_texts(edit))).cpu()
            self._routed[edit] = self._labelled_texts @ normalise(texts[1] - texts[0])
        return self._routed[edit]

    def _direction(self, edit: str) -> Tensor:
        delta = self._text_direction(edit)
        if self.labelled is not None:
            return self.labelled.direction(delta, self._routing_similarity(edit))
        if self.prior is None:
            return delta
        return self._through_prior(self.encoder.encode_texts(list(edit_texts(edit))).cpu())

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

