"""FashionIQ-like toy garments: a silhouette per category with colour, pattern, sleeves and one detail.

Each triplet's target differs from its candidate in 1-2 attributes, and each of its two captions
states some of those differences (together, all of them), the way two annotators each describe
part of a change. Like the real data, a caption describes the target relative to the candidate
("is red with stripes", "has shorter sleeves") and never mentions what stayed the same.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw, ImageFilter

Color = tuple[int, int, int]

GARMENT_COLORS: dict[str, Color] = {
    "red": (210, 35, 45),
    "orange": (240, 130, 20),
    "yellow": (238, 205, 30),
    "green": (40, 150, 70),
    "blue": (40, 90, 210),
    "purple": (125, 60, 170),
    "pink": (240, 120, 180),
    "black": (35, 35, 35),
    "white": (250, 250, 250),
    "gray": (135, 135, 135),
}
PATTERNS = ("solid", "stripes", "dots", "checks")
SLEEVES = ("sleeveless", "short", "long")  # ordered: shortest first
# The fourth attribute depends on the category: a dress' length, a shirt's pocket, a top's neckline.
DETAILS = {"dress": ("short", "long"), "shirt": ("no pocket", "pocket"), "toptee": ("round neck", "v-neck")}
ATTRIBUTES = ("color", "pattern", "sleeves", "detail")
BACKGROUNDS: tuple[Color, ...] = ((246, 246, 246), (238, 238, 238), (247, 243, 236), (240, 244, 248))


@dataclass(frozen=True)
class Garment:
    category: str
    color: str
    pattern: str
    sleeves: str
    detail: str

    def changed(self, other: Garment) -> list[str]:
        """The attributes in which `other` differs from this garment."""
        return [a for a in ATTRIBUTES if getattr(self, a) != getattr(other, a)]


@dataclass(frozen=True)
class GarmentLook:
    """How one photo of a garment is taken; nothing here is ever captioned."""

    width: int
    height: int
    scale: float  # garment height / canvas height
    shift: float  # horizontal offset, fraction of the width
    step: int  # pattern period in pixels
    phase: int
    background: int  # index into BACKGROUNDS


def all_garments(category: str) -> list[Garment]:
    return [
        Garment(category, c, p, s, d)
        for c, p, s, d in itertools.product(GARMENT_COLORS, PATTERNS, SLEEVES, DETAILS[category])
    ]


def _values(category: str, attribute: str) -> tuple[str, ...]:
    return {"color": tuple(GARMENT_COLORS), "pattern": PATTERNS, "sleeves": SLEEVES}.get(
        attribute, DETAILS[category]
    )


def random_garment(category: str, rng: random.Random) -> Garment:
    return Garment(category, **{a: rng.choice(_values(category, a)) for a in ATTRIBUTES})


def random_change(garment: Garment, rng: random.Random) -> Garment:
    """The garment with 1 (55%) or 2 attributes set to other values."""
    n = 1 if rng.random() < 0.55 else 2
    changes = {}
    for attribute in rng.sample(ATTRIBUTES, n):
        current = getattr(garment, attribute)
        changes[attribute] = rng.choice([v for v in _values(garment.category, attribute) if v != current])
    return replace(garment, **changes)


def random_look(rng: random.Random) -> GarmentLook:
    """Mostly tall product photos, some square, a few wide (so TargetPad has work to do)."""
    shape = rng.choices(("tall", "square", "wide"), weights=(6, 3, 2))[0]
    if shape == "square":
        w = rng.randint(64, 96)
        h = max(64, w + rng.randint(-6, 6))
    else:
        short = rng.randint(64, 80)
        w, h = short, min(112, round(short * rng.uniform(1.3, 1.7)))
        if shape == "wide":
            w, h = h, w
    return GarmentLook(
        w, h, rng.uniform(0.82, 0.94), rng.uniform(-0.04, 0.04), rng.randint(5, 7), rng.randrange(4),
        rng.randrange(len(BACKGROUNDS)),
    )  # fmt: skip


# ---- drawing: polygons in a unit box (x across, y down), filled with the pattern through a mask ----

_TORSO = {
    "dress": [(0.36, 0.10), (0.64, 0.10), (0.62, 0.42), (0.38, 0.42)],
    "shirt": [(0.30, 0.10), (0.70, 0.10), (0.72, 0.88), (0.28, 0.88)],
    "toptee": [(0.32, 0.12), (0.68, 0.12), (0.72, 0.78), (0.28, 0.78)],
}
_SKIRT = {
    "short": [(0.38, 0.40), (0.62, 0.40), (0.76, 0.64), (0.24, 0.64)],
    "long": [(0.38, 0.40), (0.62, 0.40), (0.82, 0.97), (0.18, 0.97)],
}
# The left sleeve; the right one is its mirror image.
_SLEEVE = {
    ("dress", "short"): [(0.36, 0.10), (0.24, 0.15), (0.19, 0.29), (0.37, 0.27)],
    ("dress", "long"): [(0.36, 0.10), (0.24, 0.15), (0.12, 0.60), (0.21, 0.62), (0.31, 0.30), (0.37, 0.27)],
    ("shirt", "short"): [(0.30, 0.10), (0.18, 0.16), (0.12, 0.34), (0.30, 0.34)],
    ("shirt", "long"): [(0.30, 0.10), (0.18, 0.16), (0.05, 0.80), (0.15, 0.82), (0.29, 0.38)],
    ("toptee", "short"): [(0.32, 0.12), (0.20, 0.18), (0.15, 0.34), (0.31, 0.33)],
    ("toptee", "long"): [(0.32, 0.12), (0.20, 0.18), (0.08, 0.72), (0.18, 0.74), (0.30, 0.38)],
}
_NECK = {"round neck": [(0.40, 0.12), (0.60, 0.12), (0.57, 0.19), (0.50, 0.21), (0.43, 0.19)],
         "v-neck": [(0.40, 0.12), (0.60, 0.12), (0.50, 0.36)]}  # fmt: skip
_COLLAR = [[(0.40, 0.08), (0.50, 0.16), (0.43, 0.22)], [(0.60, 0.08), (0.50, 0.16), (0.57, 0.22)]]
_POCKET = [(0.36, 0.26), (0.47, 0.38)]


def contrast(color: str) -> Color:
    """The pattern/trim colour: near-white on dark garments, near-black on light ones."""
    r, g, b = GARMENT_COLORS[color]
    return (30, 30, 30) if 0.299 * r + 0.587 * g + 0.114 * b > 160 else (250, 250, 250)


def render(garment: Garment, look: GarmentLook) -> Image.Image:
    w, h = look.width, look.height
    box_h = look.scale * h
    box_w = min(0.92 * w, 0.8 * box_h)
    x0, y0 = (0.5 + look.shift) * w - box_w / 2, (h - box_h) / 2

    def px(points: list[tuple[float, float]], mirror: bool = False) -> list[tuple[float, float]]:
        return [(x0 + ((1 - x) if mirror else x) * box_w, y0 + y * box_h) for x, y in points]

    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(px(_TORSO[garment.category]), fill=255)
    if garment.category == "dress":
        draw.polygon(px(_SKIRT[garment.detail]), fill=255)
    if garment.sleeves != "sleeveless":
        sleeve = _SLEEVE[(garment.category, garment.sleeves)]
        draw.polygon(px(sleeve), fill=255)
        draw.polygon(px(sleeve, mirror=True), fill=255)
    draw.polygon(px(_NECK["v-neck" if garment.detail == "v-neck" else "round neck"]), fill=0)

    trim = contrast(garment.color)
    fill = Image.new("RGB", (w, h), GARMENT_COLORS[garment.color])
    pattern = ImageDraw.Draw(fill)
    step, phase = look.step, look.phase
    if garment.pattern in ("stripes", "checks"):
        width = step // 2 if garment.pattern == "stripes" else 1
        for y in range(phase - step, h, step):
            pattern.rectangle((0, y, w, y + width - 1), fill=trim)
        if garment.pattern == "checks":
            for x in range(phase - step, w, step):
                pattern.rectangle((x, 0, x + width - 1, h), fill=trim)
    elif garment.pattern == "dots":
        for row, y in enumerate(range(phase, h, step + 1)):
            for x in range(phase + (row % 2) * (step // 2), w, step + 1):
                pattern.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=trim)

    image = Image.new("RGB", (w, h), BACKGROUNDS[look.background])
    image.paste(fill, mask=mask)
    image.paste((90, 90, 90), mask=mask.filter(ImageFilter.FIND_EDGES))
    details = ImageDraw.Draw(image)
    if garment.category == "shirt":
        for flap in _COLLAR:
            details.polygon(px(flap), fill=trim)
        if garment.detail == "pocket":
            details.rectangle(px(_POCKET), fill=trim)
    return image


# ---- captions: each phrase states one changed attribute of the target ----

COLOR_TEMPLATES = (
    "is {c}",
    "is {c} in color",
    "is {c} instead",
    "is a {c} one",
    "has a {c} color",
    "comes in {c}",
)
PATTERN_PHRASES = {
    "solid": (("is plain", "is solid", "has no pattern", "is a solid color"), ("with no pattern",)),
    "stripes": (("has stripes", "is striped", "has a striped pattern"), ("with stripes",)),
    "dots": (("has polka dots", "is dotted", "has dots"), ("with polka dots", "with dots")),
    "checks": (("is checkered", "has a checked pattern", "is plaid"), ("with checks",)),
}
SLEEVE_PHRASES = {
    "sleeveless": (("is sleeveless", "has no sleeves"), ("with no sleeves",)),
    "short": (("has short sleeves", "is short sleeved"), ("with short sleeves",)),
    "long": (("has long sleeves", "is long sleeved"), ("with long sleeves",)),
    "shorter": (("has shorter sleeves",), ("with shorter sleeves",)),
    "longer": (("has longer sleeves",), ("with longer sleeves",)),
}
DETAIL_PHRASES = {
    "short": (
        ("is shorter", "is a short dress", "is a mini dress", "is above the knee"),
        ("with a shorter hem",),
    ),
    "long": (("is longer", "is a long dress", "is a maxi dress", "is floor length"), ("with a longer hem",)),
    "pocket": (("has a pocket", "has a chest pocket", "has a breast pocket"), ("with a pocket",)),
    "no pocket": (("has no pocket", "is without a pocket", "has no pockets"), ("without a pocket",)),
    "v-neck": (("has a v-neck", "has a v neckline", "is v-necked"), ("with a v-neck",)),
    "round neck": (("has a round neck", "has a crew neck", "has a round neckline"), ("with a round neck",)),
}


NOUNS = {"dress": ("dress",), "shirt": ("shirt", "button-down"), "toptee": ("top", "tee", "t-shirt")}


def describe(garment: Garment, rng: random.Random) -> str:
    """An absolute caption of one garment ("a long red dress with stripes and long sleeves"): the toy
    image-text corpus the tiny BLIP-2 is pretrained on, with the relative captions' phrases."""
    withs = [rng.choice(PATTERN_PHRASES[garment.pattern][1]), rng.choice(SLEEVE_PHRASES[garment.sleeves][1])]
    words = [garment.color, rng.choice(NOUNS[garment.category])]
    if garment.category == "dress":
        words.insert(0, garment.detail)  # "short" / "long"
    else:
        withs.append(rng.choice(DETAIL_PHRASES[garment.detail][1]))
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words, *rng.sample(withs, len(withs))])


def _phrases(
    attribute: str, ref: Garment, tgt: Garment, rng: random.Random
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(predicate forms, "with" forms) that state how `tgt` differs from `ref` in one attribute."""
    if attribute == "color":
        return tuple(t.format(c=tgt.color) for t in COLOR_TEMPLATES), ()
    if attribute == "pattern":
        return PATTERN_PHRASES[tgt.pattern]
    if attribute == "detail":
        return DETAIL_PHRASES[tgt.detail]
    key = tgt.sleeves
    step = SLEEVES.index(tgt.sleeves) - SLEEVES.index(ref.sleeves)
    if abs(step) == 1 and rng.random() < 0.5:  # relative only when it is unambiguous
        key = "longer" if step > 0 else "shorter"
    return SLEEVE_PHRASES[key]


def _describe(attributes: list[str], ref: Garment, tgt: Garment, rng: random.Random) -> str:
    parts = [_phrases(a, ref, tgt, rng) for a in rng.sample(attributes, len(attributes))]
    text = rng.choice(parts[0][0])
    for predicates, withs in parts[1:]:
        if withs and rng.random() < 0.5:
            text += " " + rng.choice(withs)
        else:
            text += rng.choice((" and ", ", ")) + rng.choice(predicates)
    return text


def captions(ref: Garment, tgt: Garment, rng: random.Random, empty_p: float = 0.0) -> list[str]:
    """Two captions that each state some of the changes and together state all of them.

    With `empty_p` one of them is empty, as a few real training captions are.
    """
    changed = ref.changed(tgt)
    if len(changed) == 1:
        plans = [(changed, changed)]
    else:
        a, b = rng.sample(changed, 2)
        plans = [(changed, [a]), ([a], [b]), ([a], changed), (changed, changed)]
    first, second = rng.choices(plans, weights=(4, 3, 2, 1)[: len(plans)])[0]
    pair = [_describe(first, ref, tgt, rng), _describe(second, ref, tgt, rng)]
    for _ in range(5):  # two annotators rarely use the same words
        if pair[0] != pair[1]:
            break
        pair[1] = _describe(second, ref, tgt, rng)
    if rng.random() < empty_p:
        pair = [_describe(changed, ref, tgt, rng), ""]
    rng.shuffle(pair)
    return pair


# ---- one category and split ----


@dataclass(frozen=True)
class FiqImage:
    name: str
    garment: Garment
    look: GarmentLook


@dataclass(frozen=True)
class FiqQuery:
    reference: str
    target: str
    captions: tuple[str, str]


_ASIN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def asin(rng: random.Random, used: set[str]) -> str:
    """An Amazon-style id, `B0` + 8 upper-case alphanumerics, unique across the dataset."""
    while True:
        name = "B0" + "".join(rng.choices(_ASIN_CHARS, k=8))
        if name not in used:
            used.add(name)
            return name


def generate_train(category: str, n_queries: int, rng: random.Random, used: set[str]) -> tuple[list, list]:
    """Training split: a candidate is often reused (35%), every target is a fresh photo."""
    images: list[FiqImage] = []
    queries: list[FiqQuery] = []
    for _ in range(n_queries):
        if images and rng.random() < 0.35:
            ref = rng.choice(images)
        else:
            ref = FiqImage(asin(rng, used), random_garment(category, rng), random_look(rng))
            images.append(ref)
        tgt = FiqImage(asin(rng, used), random_change(ref.garment, rng), random_look(rng))
        images.append(tgt)
        queries.append(
            FiqQuery(ref.name, tgt.name, tuple(captions(ref.garment, tgt.garment, rng, empty_p=0.01)))
        )
    rng.shuffle(images)
    return images, queries


def generate_eval(
    category: str, n_images: int, n_queries: int, rng: random.Random, used: set[str]
) -> tuple[list, list]:
    """val/test split: a gallery spread evenly over the attribute space, and triplets between gallery
    images 1-2 attributes apart, so a target has look-alikes. A gallery larger than the space (the toy
    sizes' are) holds each garment in several photos, as FashionIQ holds near-identical products: a
    target competes with its twins and with many more look-alikes than a small gallery has, which keeps
    the tiny models' recalls off the ceiling (tests/test_reference.py checks it)."""
    space = all_garments(category)
    rng.shuffle(space)
    images = [FiqImage(asin(rng, used), space[i % len(space)], random_look(rng)) for i in range(n_images)]
    queries = []
    for i in range(n_queries):
        ref = images[i % n_images]
        near = {1: [], 2: []}
        for other in images:
            d = len(ref.garment.changed(other.garment))
            if d in near and other is not ref:
                near[d].append(other)
        tgt = rng.choice(near[1] if near[1] and (rng.random() < 0.55 or not near[2]) else near[2])
        queries.append(FiqQuery(ref.name, tgt.name, tuple(captions(ref.garment, tgt.garment, rng))))
    rng.shuffle(queries)
    return images, queries


def query_record(query: FiqQuery, with_target: bool) -> dict:
    """The `cap.<category>.<split>.json` record; test hides the target."""
    record = {"target": query.target} if with_target else {}
    return record | {"candidate": query.reference, "captions": list(query.captions)}
