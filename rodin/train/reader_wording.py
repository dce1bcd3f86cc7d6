"""More ways to say an avatar's attributes, for the prompt reader's training only.

The generator's captions (`rodin.data.avatar.caption`) use a few dozen fixed forms ("with curly red hair",
"in a blue hoodie"); a reader trained on them alone learns those forms rather than the words' meaning, and
misreads a prompt that puts it differently (BENCHMARKS.md, "Prompts read as attributes"). These prompts say
the same attributes in other forms and other words: one clause per attribute, in random order, after a
varied noun. None of their words or forms is taken from the evaluation's paraphrases
(`rodin.eval.semantic.paraphrase`), so that `text_attr_acc` still scores wording the model never saw; a test
checks this.
"""

from __future__ import annotations

import random

from rodin.data.avatar import AvatarAttributes

HAIR_COLOUR = {
    "black": ["black", "inky black", "ebony", "pitch-black"], "dark brown": ["dark brown", "walnut", "dark chestnut"],
    "brown": ["brown", "caramel", "tawny", "medium brown"], "auburn": ["auburn", "mahogany", "copper-brown"],
    "ginger": ["ginger", "red", "orange-red", "strawberry"], "blonde": ["blonde", "golden", "honey-blonde", "yellow"],
    "platinum": ["platinum", "bleached", "silvery-blonde"], "grey": ["grey", "greying", "silver-grey", "gray"],
    "white": ["white", "milk-white", "chalk-white"], "blue": ["blue", "sky-blue", "azure", "sapphire"],
    "pink": ["pink", "hot pink", "magenta", "fuchsia"], "green": ["green", "mint green", "neon green", "jade"],
    "purple": ["purple", "violet", "mauve", "lilac", "indigo"],
}
CLOTH_COLOUR = {
    "red": ["red", "cherry-red", "ruby", "brick-red"], "orange": ["orange", "amber", "pumpkin"],
    "yellow": ["yellow", "canary yellow", "golden yellow"], "green": ["green", "bottle-green", "mint"],
    "teal": ["teal", "aqua", "cyan", "sea-green"], "blue": ["blue", "sky-blue", "cornflower blue", "azure"],
    "navy": ["navy", "dark navy", "marine blue"], "purple": ["purple", "violet", "mauve", "lilac"],
    "pink": ["pink", "fuchsia", "magenta", "salmon-pink"], "brown": ["brown", "coffee", "rust-brown"],
    "black": ["black", "ebony", "pitch-black"], "grey": ["grey", "slate", "smoke-grey", "silver"],
    "white": ["white", "snow-white", "off-white"], "beige": ["beige", "camel", "taupe", "oatmeal"],
}
HAIR_STYLE = {
    "bald": ["bald-headed", "with a bald head", "shaven-headed", "with a smooth bald head"],
    "buzz": ["with a buzzed head", "with a very short clipper cut", "with a number-one haircut"],
    "short": ["short-haired", "with a short hairdo", "with trimmed hair", "with a short cut"],
    "long": ["long-haired", "with shoulder-length hair", "with hair to the waist", "with lengthy hair"],
    "bun": ["with a high bun", "with a chignon", "with hair wound up in a bun", "with a bun on the head"],
    "curly": ["curly-haired", "with wavy curls", "with corkscrew curls", "with kinky curly hair"],
    "afro": ["with an afro hairdo", "with a round afro", "with puffy afro hair", "with a huge afro"],
    "ponytail": ["with a ponytail hairdo", "with a high ponytail", "with a low ponytail", "ponytailed"],
    "mohawk": ["with a mohican", "with a fauxhawk", "with a shaved-sides mohawk", "mohawked"],
}
# Hair clauses that carry a colour word: {c} is the colour; a style word where the form has one.
HAIR_COLOUR_FORMS = ["{c}-haired", "with a {c} mane", "having {c} hair", "with a head of {c} hair",
                     "sporting {c} hair", "hair: {c}", "with hair of a {c} shade"]
BEARD = {
    "full": ["bearded", "with a long beard", "with a heavy beard", "with a woolly beard", "with a thick full beard"],
    "stubble": ["with a day's growth", "with designer stubble", "with a bristly chin", "stubble-faced"],
    "none": ["beardless", "with a shaved face", "with a smooth chin"],
}
GLASSES = {
    "round": ["with round specs", "with round-framed glasses", "wearing owl-like round glasses",
              "in round spectacles"],
    "square": ["with rectangular specs", "with thick square glasses", "with oblong glasses",
               "in square-rimmed specs"],
    "sunglasses": ["with dark glasses", "wearing sunnies", "in mirrored shades", "wearing sun-glasses"],
    "none": ["without spectacles", "with no glasses"],
}
HAT = {
    "cap": ["with a baseball hat", "wearing a snapback", "in a trucker cap", "with a cap"],
    "beanie": ["in a bobble hat", "with a knit cap", "in a ski hat", "wearing a stocking cap"],
    "none": ["bareheaded", "with no hat"],
}
GARMENT = {
    "t-shirt": ["T-shirt", "tshirt", "short-sleeved shirt"], "hoodie": ["hooded jumper", "hoody", "pullover hoodie"],
    "suit": ["blazer and tie", "formal suit", "jacket and tie"],
    "turtleneck": ["high-necked sweater", "mock-neck jumper"],
    "polo": ["polo", "golf shirt", "collared polo"],
}
GARMENT_FORMS = ["in {a} {c} {g}", "wearing {a} {c} {g}", "with {a} {c} {g} on", "clad in {a} {c} {g}"]
COLOUR_ONLY_FORMS = ["in {c}", "wearing {c}", "dressed head to toe in {c}", "clad in {c}", "in {a} {c} outfit",
                     "with {a} {c} shirt"]
EXPRESSION = {
    "smile": ["laughing", "with a grin", "smiling broadly", "with a toothy smile", "gleeful", "grinning widely"],
    "open": ["mouth agape", "shocked", "with a gaping mouth", "amazed", "startled", "with an O-shaped mouth"],
    "neutral": ["with a relaxed face", "unsmiling", "with a serious look", "with a deadpan look", "poker-faced"],
}
SKIN = {
    "pale": ["very pale", "with porcelain skin", "pallid"],
    "fair": ["light-skinned", "with light skin", "fair-skinned"],
    "tan": ["tanned", "sun-tanned", "with tanned skin"], "olive": ["olive-toned", "with olive-toned skin"],
    "brown": ["brown-skinned", "with brown skin"], "dark": ["dark-skinned", "with very dark skin"],
}
SKIN_FORMS = ["with {s} skin", "of {s} skin", "having {s} skin", "with a {s} skin colour", "{s}-skinned"]
NOUNS = ["a woman", "a man", "a girl", "a boy", "a kid", "a lady", "a teenager", "an adult", "a person",
         "a student", "a model", "a young adult", "an avatar", "a 3D head of a person", "a bust of a new character",
         "a stylised person", "a cartoon figure"]
JOINS = [", ", " and ", ", ", "; ", ", also ", " and ", ", plus "]


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _clause(group: str, attrs: AvatarAttributes, rng: random.Random) -> tuple[str, dict[str, str]]:
    if group == "hair":
        style, colour = attrs.hair_style, attrs.hair_colour
        if style == "bald":
            return rng.choice(HAIR_STYLE["bald"]), {"hair_style": "bald"}
        c = rng.choice(HAIR_COLOUR[colour])
        roll = rng.random()
        if roll < 0.4:
            return rng.choice(HAIR_COLOUR_FORMS).format(c=c), {"hair_colour": colour}
        if roll < 0.7:
            return rng.choice(HAIR_STYLE[style]), {"hair_style": style}
        return (f"{rng.choice(HAIR_STYLE[style])}, {rng.choice(HAIR_COLOUR_FORMS).format(c=c)}",
                {"hair_style": style, "hair_colour": colour})
    if group == "beard":
        return rng.choice(BEARD[attrs.beard]), {"beard": attrs.beard}
    if group == "glasses":
        return rng.choice(GLASSES[attrs.glasses]), {"glasses": attrs.glasses}
    if group == "hat":
        return rng.choice(HAT[attrs.hat]), {"hat": attrs.hat}
    if group == "clothing":
        c = rng.choice(CLOTH_COLOUR[attrs.clothing_colour])
        if rng.random() < 0.5:
            return (rng.choice(COLOUR_ONLY_FORMS).format(a=_a(c), c=c), {"clothing_colour": attrs.clothing_colour})
        g = rng.choice(GARMENT[attrs.clothing])
        return (rng.choice(GARMENT_FORMS).format(a=_a(c), c=c, g=g),
                {"clothing": attrs.clothing, "clothing_colour": attrs.clothing_colour})
    if group == "expression":
        return rng.choice(EXPRESSION[attrs.expression]), {"expression": attrs.expression}
    if group == "skin":
        if rng.random() < 0.5:
            return rng.choice(SKIN[attrs.skin]), {"skin": attrs.skin}
        return rng.choice(SKIN_FORMS).format(s=attrs.skin), {"skin": attrs.skin}
    raise ValueError(group)


GROUPS = ("hair", "beard", "glasses", "hat", "clothing", "expression", "skin")


def reworded(attrs: AvatarAttributes, rng: random.Random, *, mentions: int | None = None) -> tuple[str, dict[str, str]]:
    """A prompt naming `mentions` (default 1-4) of the avatar's attribute groups in other words, and what it
    names. Absent beards, glasses and hats are named now and then ("beardless")."""
    groups = [g for g in GROUPS if g not in ("beard", "glasses", "hat") or getattr(attrs, g) != "none"
              or rng.random() < 0.15]
    count = min(len(groups), mentions or rng.randint(1, 4))
    chosen = rng.sample(groups, k=count)
    clauses, named = [], {}
    for group in chosen:
        text, says = _clause(group, attrs, rng)
        clauses.append(text)
        named.update(says)
    body = clauses[0]
    for clause in clauses[1:]:
        body += rng.choice(JOINS) + clause
    return f"{rng.choice(NOUNS)} {body}", named
