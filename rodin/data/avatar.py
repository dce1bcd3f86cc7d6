"""Attributes of procedural avatars, and captions in varied wording built from them.

`sample_attributes(seed)` draws one avatar: categorical choices (hair style, glasses, clothing, ...)
with their named colours, and continuous shape parameters (head width, jaw, eye size, ...). The
draw depends on the seed only (Python's `random.Random`, stable across platforms and versions).
`caption(attrs, rng)` writes a sentence about the avatar; different rngs give different wordings
of the same avatar (synonyms, templates and the order of clauses vary).

No torch here: the geometry lives in `rodin.data.sdf`.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

# --- named colours (sRGB in [0, 1]) -------------------------------------------------------------

HAIR_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.06, 0.05, 0.05),
    "dark brown": (0.20, 0.12, 0.07),
    "brown": (0.38, 0.23, 0.12),
    "auburn": (0.52, 0.20, 0.10),
    "ginger": (0.80, 0.38, 0.14),
    "blonde": (0.90, 0.76, 0.45),
    "platinum": (0.93, 0.90, 0.80),
    "grey": (0.58, 0.58, 0.58),
    "white": (0.92, 0.92, 0.90),
    "blue": (0.15, 0.35, 0.85),
    "pink": (0.95, 0.45, 0.70),
    "green": (0.20, 0.65, 0.35),
    "purple": (0.50, 0.25, 0.75),
}
# Natural colours are much more common than dyed ones.
_HAIR_COLOUR_WEIGHTS = {"black": 5, "dark brown": 5, "brown": 5, "auburn": 2, "ginger": 2, "blonde": 4,
                        "platinum": 1.5, "grey": 2, "white": 1.5, "blue": 1, "pink": 1, "green": 0.7,
                        "purple": 0.8}

CLOTH_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.12, 0.12),
    "orange": (0.95, 0.50, 0.10),
    "yellow": (0.95, 0.82, 0.20),
    "green": (0.15, 0.60, 0.25),
    "teal": (0.10, 0.55, 0.55),
    "blue": (0.15, 0.35, 0.85),
    "navy": (0.10, 0.14, 0.38),
    "purple": (0.45, 0.22, 0.65),
    "pink": (0.95, 0.52, 0.72),
    "brown": (0.45, 0.28, 0.15),
    "black": (0.08, 0.08, 0.09),
    "grey": (0.50, 0.50, 0.52),
    "white": (0.93, 0.93, 0.92),
    "beige": (0.85, 0.76, 0.60),
}

EYE_COLOURS: dict[str, tuple[float, float, float]] = {
    "brown": (0.40, 0.22, 0.08),
    "dark brown": (0.20, 0.11, 0.05),
    "blue": (0.20, 0.50, 0.95),
    "green": (0.20, 0.62, 0.30),
    "hazel": (0.55, 0.45, 0.18),
    "grey": (0.55, 0.60, 0.65),
    "amber": (0.85, 0.55, 0.10),
}

FRAME_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.05, 0.05, 0.05),
    "tortoiseshell": (0.40, 0.22, 0.10),
    "gold": (0.85, 0.68, 0.25),
    "silver": (0.75, 0.75, 0.78),
    "red": (0.75, 0.10, 0.10),
    "blue": (0.15, 0.30, 0.75),
}

# Skin: a continuous tone t in [0, 1] interpolates these (light to dark); names bin it for captions.
SKIN_RAMP: list[tuple[float, float, float]] = [
    (0.98, 0.86, 0.76),
    (0.93, 0.76, 0.63),
    (0.82, 0.61, 0.46),
    (0.64, 0.44, 0.30),
    (0.45, 0.30, 0.20),
    (0.28, 0.18, 0.12),
]
SKIN_NAMES = ["pale", "fair", "olive", "tan", "brown", "dark"]

HAIR_STYLES = ["bald", "buzz", "short", "long", "bun", "curly", "afro", "ponytail", "mohawk"]
_HAIR_STYLE_WEIGHTS = [0.7, 1, 1.6, 1.4, 1, 1, 0.8, 1, 0.5]
BEARDS = ["none", "stubble", "full"]
GLASSES = ["none", "round", "square", "sunglasses"]
HATS = ["none", "cap", "beanie"]
CLOTHING = ["t-shirt", "hoodie", "suit", "turtleneck", "polo"]
EXPRESSIONS = ["neutral", "smile", "open"]
BROWS = ["thin", "thick", "arched", "straight", "angled"]
NOSES = ["small", "button", "long", "wide", "pointed"]
EARS = ["small", "normal", "large", "pointy"]

# Styles that stick out above a hat: worn without one.
_NO_HAT_STYLES = {"bun", "afro", "mohawk"}

# Continuous shape parameters: name -> (low, high), sampled uniformly. Mostly multiplicative factors.
SHAPE_RANGES: dict[str, tuple[float, float]] = {
    "head_width": (0.90, 1.10),
    "head_height": (0.93, 1.06),
    "jaw": (0.80, 1.15),          # width of the lower face
    "chin": (0.85, 1.15),         # length of the chin
    "cheeks": (0.0, 1.0),         # fullness of the cheeks
    "neck": (0.85, 1.15),         # neck thickness
    "shoulders": (0.88, 1.08),    # shoulder width
    "eye_size": (0.90, 1.15),
    "eye_spacing": (0.92, 1.08),
    "eye_height": (-0.015, 0.015),
    "gaze_x": (-0.15, 0.15),      # where the eyes look (radians-ish, small)
    "gaze_y": (-0.10, 0.12),
    "nose_size": (0.85, 1.2),
    "mouth_width": (0.85, 1.2),
    "ear_size": (0.85, 1.15),
    "brow_thickness": (0.85, 1.3),
    "brow_height": (-0.012, 0.015),
    "hair_volume": (0.85, 1.2),
    "skin_tone": (0.0, 1.0),      # 0 light ... 1 dark (see SKIN_RAMP)
    "colour_jitter": (-1.0, 1.0),  # small variation of hair and cloth shades
}


@dataclass(frozen=True)
class AvatarAttributes:
    """One procedural avatar: named choices, named colours and continuous shape parameters."""

    seed: int
    hair_style: str
    hair_colour: str
    beard: str
    glasses: str
    glasses_colour: str
    hat: str
    hat_colour: str
    clothing: str
    clothing_colour: str
    expression: str
    eye_colour: str
    brows: str
    nose: str
    ears: str
    skin: str                                   # named bin of shape["skin_tone"]
    shape: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AvatarAttributes:
        names = {f.name for f in cls.__dataclass_fields__.values()}
        return cls(**{k: v for k, v in data.items() if k in names})

    def categorical(self) -> dict[str, str]:
        """The named attributes only (what a caption talks about)."""
        return {k: v for k, v in self.to_dict().items() if isinstance(v, str)}


def skin_rgb(tone: float) -> tuple[float, float, float]:
    """Interpolate SKIN_RAMP at tone in [0, 1]."""
    tone = min(max(tone, 0.0), 1.0) * (len(SKIN_RAMP) - 1)
    i = min(int(tone), len(SKIN_RAMP) - 2)
    f = tone - i
    a, b = SKIN_RAMP[i], SKIN_RAMP[i + 1]
    return tuple(a[c] * (1 - f) + b[c] * f for c in range(3))  # type: ignore[return-value]


def skin_name(tone: float) -> str:
    return SKIN_NAMES[min(int(min(max(tone, 0.0), 1.0) * len(SKIN_NAMES)), len(SKIN_NAMES) - 1)]


def _weighted(rng: random.Random, options: list[str], weights: list[float]) -> str:
    return rng.choices(options, weights=weights, k=1)[0]


def sample_attributes(seed: int) -> AvatarAttributes:
    """Draw one avatar from `seed` (any int); deterministic across runs and platforms."""
    rng = random.Random(f"rodin-avatar/{int(seed)}")
    shape = {name: round(rng.uniform(lo, hi), 5) for name, (lo, hi) in SHAPE_RANGES.items()}
    # Skin tones: spread over the whole ramp, a little more mass in the middle.
    shape["skin_tone"] = round(min(max(rng.betavariate(1.3, 1.3), 0.0), 1.0), 5)

    hair_style = _weighted(rng, HAIR_STYLES, _HAIR_STYLE_WEIGHTS)
    hair_colour = _weighted(rng, list(_HAIR_COLOUR_WEIGHTS), list(_HAIR_COLOUR_WEIGHTS.values()))
    beard = _weighted(rng, BEARDS, [0.55, 0.2, 0.25])
    if hair_style in ("long", "bun", "ponytail") and beard != "none" and rng.random() < 0.6:
        beard = "none"
    glasses = _weighted(rng, GLASSES, [0.5, 0.18, 0.18, 0.14])
    glasses_colour = rng.choice(list(FRAME_COLOURS))
    if glasses == "sunglasses" and rng.random() < 0.6:
        glasses_colour = "black"
    hat = _weighted(rng, HATS, [0.64, 0.18, 0.18])
    if hair_style in _NO_HAT_STYLES:
        hat = "none"
    hat_colour = rng.choice(list(CLOTH_COLOURS))
    clothing = rng.choice(CLOTHING)
    clothing_colour = rng.choice(list(CLOTH_COLOURS))
    if hat != "none" and hat_colour == clothing_colour and rng.random() < 0.5:
        hat_colour = rng.choice(list(CLOTH_COLOURS))
    expression = _weighted(rng, EXPRESSIONS, [0.4, 0.4, 0.2])
    eye_colour = _weighted(rng, list(EYE_COLOURS), [4, 2, 3, 2, 2, 1, 1])
    brows = rng.choice(BROWS)
    nose = rng.choice(NOSES)
    ears = _weighted(rng, EARS, [1, 2, 1, 0.4])
    return AvatarAttributes(
        seed=int(seed), hair_style=hair_style, hair_colour=hair_colour, beard=beard, glasses=glasses,
        glasses_colour=glasses_colour if glasses != "none" else "none", hat=hat,
        hat_colour=hat_colour if hat != "none" else "none", clothing=clothing,
        clothing_colour=clothing_colour, expression=expression, eye_colour=eye_colour, brows=brows,
        nose=nose, ears=ears, skin=skin_name(shape["skin_tone"]), shape=shape,
    )


# --- captions -----------------------------------------------------------------------------------

_HAIR_COLOUR_WORDS = {
    "black": ["black", "jet-black", "dark"],
    "dark brown": ["dark brown", "chestnut"],
    "brown": ["brown", "light brown"],
    "auburn": ["auburn", "reddish-brown"],
    "ginger": ["ginger", "red", "copper"],
    "blonde": ["blonde", "blond", "golden"],
    "platinum": ["platinum blonde", "platinum", "very light blonde"],
    "grey": ["grey", "gray", "silver"],
    "white": ["white", "snow-white"],
    "blue": ["blue", "dyed blue", "bright blue"],
    "pink": ["pink", "dyed pink", "bright pink"],
    "green": ["green", "dyed green", "bright green"],
    "purple": ["purple", "dyed purple", "violet"],
}

_CLOTH_COLOUR_WORDS = {
    "red": ["red", "bright red"], "orange": ["orange"], "yellow": ["yellow", "mustard"],
    "green": ["green"], "teal": ["teal", "turquoise"], "blue": ["blue", "bright blue"],
    "navy": ["navy", "navy blue", "dark blue"], "purple": ["purple", "violet"], "pink": ["pink"],
    "brown": ["brown"], "black": ["black"], "grey": ["grey", "gray"], "white": ["white"],
    "beige": ["beige", "tan"],
}


def _a(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def _hair_phrase(attrs: AvatarAttributes, rng: random.Random) -> tuple[str | None, str | None]:
    """(adjective before the noun, clause after it); either may be None."""
    c = rng.choice(_HAIR_COLOUR_WORDS[attrs.hair_colour])
    style = attrs.hair_style
    if style == "bald":
        return rng.choice([("bald", None), (None, "with a shaved head"), ("bald", None),
                           (None, "with no hair")])
    options = {
        "buzz": [f"with a {c} buzz cut", f"with very short {c} hair", f"with a {c} crew cut"],
        "short": [f"with short {c} hair", f"with neat short {c} hair", f"with cropped {c} hair"],
        "long": [f"with long {c} hair", f"with {c} hair down to the shoulders", f"with long flowing {c} hair"],
        "bun": [f"with {c} hair in a bun", f"with {_a(c)} hair bun", f"with {c} hair tied up in a bun"],
        "curly": [f"with curly {c} hair", f"with {c} curls", f"with short curly {c} hair"],
        "afro": [f"with {_a(c)} afro", f"with a big {c} afro", f"with voluminous {c} afro hair"],
        "ponytail": [f"with {c} hair in a ponytail", f"with {_a(c)} ponytail", f"with a {c} ponytail"],
        "mohawk": [f"with {_a(c)} mohawk", f"with a {c} mohawk haircut", f"sporting {_a(c)} mohawk"],
    }[style]
    return None, rng.choice(options)


def _clauses(attrs: AvatarAttributes, rng: random.Random) -> tuple[list[str], list[str], str, dict[str, dict]]:
    """Adjectives before the noun, clauses after it, the noun, and what each adjective or clause says
    (its text -> the attribute values it names)."""
    adjectives: list[str] = []
    clauses: list[str] = []
    says: dict[str, dict] = {}
    adj, clause = _hair_phrase(attrs, rng)
    hair = {"hair_style": attrs.hair_style}
    if attrs.hair_style != "bald":
        hair["hair_colour"] = attrs.hair_colour
    if adj:
        adjectives.append(adj)
        says[adj] = hair
    if clause:
        clauses.append(clause)
        says[clause] = hair

    before_beard = len(clauses)
    if attrs.beard == "full":
        hc = rng.choice(_HAIR_COLOUR_WORDS[attrs.hair_colour])
        clauses.append(rng.choice(["with a full beard", "with a thick beard", f"with a {hc} beard",
                                   "with a bushy beard"]))
    elif attrs.beard == "stubble":
        clauses.append(rng.choice(["with stubble", "with a stubbly chin", "with a five o'clock shadow",
                                   "unshaven"]))
    elif rng.random() < 0.08:
        clauses.append("clean-shaven")
    if len(clauses) > before_beard:
        says[clauses[-1]] = {"beard": attrs.beard}

    if attrs.glasses != "none":
        fc = attrs.glasses_colour
        clauses.append(rng.choice({
            "round": ["wearing round glasses", "with round spectacles", f"in round {fc} glasses",
                      "wearing round-rimmed glasses"],
            "square": ["wearing square glasses", "with rectangular glasses", f"in square {fc} glasses",
                       "with square-framed spectacles"],
            "sunglasses": ["wearing sunglasses", "in dark sunglasses", "with shades on",
                           f"wearing {fc} sunglasses"],
        }[attrs.glasses]))
        says[clauses[-1]] = {"glasses": attrs.glasses}

    if attrs.hat != "none":
        hc = rng.choice(_CLOTH_COLOUR_WORDS[attrs.hat_colour])
        clauses.append(rng.choice({
            "cap": [f"wearing {_a(hc)} baseball cap", f"in {_a(hc)} cap", f"with {_a(hc)} cap on"],
            "beanie": [f"wearing {_a(hc)} beanie", f"in {_a(hc)} knit hat", f"with {_a(hc)} woolly hat"],
        }[attrs.hat]))
        says[clauses[-1]] = {"hat": attrs.hat}

    cc = rng.choice(_CLOTH_COLOUR_WORDS[attrs.clothing_colour])
    clauses.append(rng.choice({
        "t-shirt": [f"in {_a(cc)} t-shirt", f"wearing {_a(cc)} tee", f"dressed in {_a(cc)} t-shirt"],
        "hoodie": [f"in {_a(cc)} hoodie", f"wearing {_a(cc)} hooded sweatshirt", f"wearing {_a(cc)} hoodie"],
        "suit": [f"in {_a(cc)} suit", f"wearing {_a(cc)} suit and tie", f"dressed in {_a(cc)} business suit"],
        "turtleneck": [f"in {_a(cc)} turtleneck", f"wearing {_a(cc)} turtleneck sweater",
                       f"in {_a(cc)} roll-neck jumper"],
        "polo": [f"in {_a(cc)} polo shirt", f"wearing {_a(cc)} polo", f"dressed in {_a(cc)} collared shirt"],
    }[attrs.clothing]))
    says[clauses[-1]] = {"clothing": attrs.clothing, "clothing_colour": attrs.clothing_colour}

    expression = {
        "neutral": ["with a neutral expression", "with a calm face", "looking serious", None, None],
        "smile": ["smiling", "with a big smile", "grinning", "with a happy smile", "smiling warmly"],
        "open": ["with an open mouth", "looking surprised", "with the mouth open", "open-mouthed"],
    }[attrs.expression]
    e = rng.choice(expression)
    if e:
        clauses.append(e)
        says[e] = {"expression": attrs.expression}

    if rng.random() < 0.5:
        ec = attrs.eye_colour
        if rng.random() < 0.75:
            clauses.append(f"with {ec} eyes")
        else:
            adjectives.append(f"{ec.replace(' ', '-')}-eyed")
    if rng.random() < 0.45:
        s = attrs.skin
        if rng.random() < 0.5:
            adjectives.append(f"{s}-skinned")
            says[adjectives[-1]] = {"skin": s}
        else:
            clauses.append(f"with {s} skin")
            says[clauses[-1]] = {"skin": s}

    bearded = attrs.beard != "none"
    nouns = ["man", "guy", "man", "person"] if bearded else ["person", "character", "avatar", "figure",
                                                            "young person", "cartoon person"]
    return adjectives, clauses, rng.choice(nouns), says


_BEARD_WORDS = ("beard", "stubble", "stubbly", "shadow", "unshaven")


def _mentioning(adjectives: list[str], clauses: list[str], noun: str, mentions: int,
                rng: random.Random) -> tuple[list[str], list[str], str]:
    """`mentions` of the parts (adjectives and clauses together), in their order; a neutral noun unless a
    beard part is kept."""
    parts = [("adjective", a) for a in adjectives] + [("clause", c) for c in clauses]
    kept = set(rng.sample(range(len(parts)), k=min(max(mentions, 1), len(parts)))) if parts else set()
    adjectives = [text for i, (kind, text) in enumerate(parts) if i in kept and kind == "adjective"]
    clauses = [text for i, (kind, text) in enumerate(parts) if i in kept and kind == "clause"]
    if not any(word in text for text in clauses for word in _BEARD_WORDS):
        noun = rng.choice(["person", "character", "avatar", "figure", "young person", "cartoon person"])
    return adjectives, clauses, noun


def _join(parts: list[str], rng: random.Random) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    if rng.random() < 0.5:
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    return ", ".join(parts)


def caption(attrs: AvatarAttributes, rng: random.Random | int | None = None, *, mentions: int | None = None) -> str:
    """A sentence about the avatar in varied wording (deterministic for a given rng or int seed).

    `mentions` keeps only that many of its descriptive parts, drawn at random, as a person's prompt names
    a few attributes rather than all of them ("a person with red hair"); the noun then no longer tells a
    beard unless the beard is among the parts kept.
    """
    if not isinstance(rng, random.Random):
        rng = random.Random(f"rodin-caption/{attrs.seed if rng is None else int(rng)}")
    return described(attrs, rng, mentions=mentions)[0]


def described(attrs: AvatarAttributes, rng: random.Random | int | None = None, *,
              mentions: int | None = None) -> tuple[str, dict[str, str]]:
    """`caption`'s sentence (the same one for the same rng) and the attribute values it names: what a
    reader of prompts learns from. Attributes a caption leaves out are not in the dict, even where a whole
    caption's silence means "none" (no glasses), as a person's prompt leaves them open."""
    if not isinstance(rng, random.Random):
        rng = random.Random(f"rodin-caption/{attrs.seed if rng is None else int(rng)}")
    adjectives, clauses, noun, says = _clauses(attrs, rng)
    if mentions is not None:
        adjectives, clauses, noun = _mentioning(adjectives, clauses, noun, mentions, rng)
    named = {name: value for part in adjectives + clauses for name, value in says.get(part, {}).items()}
    first = clauses[:1] if clauses and rng.random() < 0.6 else []   # the hair clause, often first
    rest = clauses[len(first):]
    rng.shuffle(rest)
    clauses = first + rest
    if rng.random() < 0.6:   # "with curly hair, a full beard and round glasses"
        merged: list[str] = []
        for i, c in enumerate(clauses):
            if i > 0 and c.startswith("with ") and clauses[i - 1].startswith("with "):
                c = c[len("with "):]
            merged.append(c)
        clauses = merged
    # Expression words like "smiling" read well right after the noun; keep "with ..." clauses after.
    head = " ".join(adjectives + [noun])
    subject = _a(head)
    prefix = rng.choice(["", "", "", "a portrait of ", "a 3D avatar of ", "a cartoon of ", "a bust of ",
                         "a render of "])
    if "cartoon" in head and prefix == "a cartoon of ":
        prefix = "a drawing of "          # not "a cartoon of a cartoon person"
    body = _join(clauses, rng) if clauses else ""
    text = f"{prefix}{subject}"
    if body:
        sep = ", " if rng.random() < 0.3 else " "
        text = f"{text}{sep}{body}"
    return text, named


__all__ = [
    "AvatarAttributes", "BEARDS", "BROWS", "CLOTHING", "CLOTH_COLOURS", "EARS", "EXPRESSIONS",
    "EYE_COLOURS", "FRAME_COLOURS", "GLASSES", "HAIR_COLOURS", "HAIR_STYLES", "HATS", "NOSES",
    "SHAPE_RANGES", "SKIN_NAMES", "caption", "described", "sample_attributes", "skin_name", "skin_rgb",
]
