"""CIRR-like toy scenes: the scene model, its drawing, and absolute captions of whole scenes.

Kept apart from `cirr` (edits, relative captions, splits) because both the split generator and the
pretraining corpus need scenes, and tests check drawings against scenes without any edits. A scene is
what a caption can talk about; a `Look` is how one image of it is drawn (canvas size, jitter,
background gradient), which no caption mentions. Kinds are unique within a scene, so "the circle"
always names one shape.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

Color = tuple[int, int, int]

COLORS: dict[str, Color] = {
    "red": (220, 30, 40),
    "orange": (245, 135, 0),
    "yellow": (240, 210, 0),
    "green": (25, 160, 60),
    "blue": (30, 80, 225),
    "purple": (135, 45, 185),
    "pink": (245, 95, 185),
}
KINDS = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.17, "large": 0.25}  # side as a fraction of the canvas' short side
BACKGROUNDS: dict[str, Color] = {
    "white": (250, 250, 250),
    "light gray": (222, 222, 222),
    "cream": (245, 238, 215),
    "pale blue": (215, 232, 248),
    "pale green": (222, 240, 222),
}
GRID = (0.21, 0.5, 0.79)  # cell centres as fractions of width (columns) and height (rows)
JITTER = 0.01  # max centre offset, fraction of width/height
POINTED_SCALE = 1.05  # triangles and diamonds fill half their box; drawn a little larger to read as big
# Worst case, neighbours' centres are (0.29 - 2 * JITTER) of a side apart and two large pointed shapes
# reach 2 * 0.125 * POINTED_SCALE of the short side towards each other: shapes never touch.
MAX_SHAPES = 3


@dataclass(frozen=True, order=True)
class Shape:
    kind: str
    color: str
    size: str
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    """The captionable content of an image: background and shapes (sorted by kind)."""

    background: str
    shapes: tuple[Shape, ...]

    def shape(self, kind: str) -> Shape:
        for s in self.shapes:
            if s.kind == kind:
                return s
        raise ValueError(f"no {kind} in {self}")

    def kinds(self) -> set[str]:
        return {s.kind for s in self.shapes}

    def free_cells(self) -> list[tuple[int, int]]:
        used = {(s.row, s.col) for s in self.shapes}
        return [(r, c) for r in range(3) for c in range(3) if (r, c) not in used]

    def with_shapes(self, shapes: list[Shape]) -> Scene:
        return Scene(self.background, tuple(sorted(shapes)))


@dataclass(frozen=True)
class Look:
    """How one image of a scene is drawn; nothing here is ever captioned."""

    width: int
    height: int
    gradient: bool
    jitter: tuple[tuple[str, float, float], ...]  # (kind, dx, dy) as fractions of width / height


def random_scene(rng: random.Random) -> Scene:
    """1-3 shapes of distinct kinds in distinct cells (two most often), on a random background."""
    n = rng.choices((1, 2, 3), weights=(2, 4, 3))[0]
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], n)
    shapes = [
        Shape(kind, rng.choice(list(COLORS)), rng.choice(list(SIZES)), row, col)
        for kind, (row, col) in zip(rng.sample(KINDS, n), cells, strict=True)
    ]
    return Scene(rng.choice(list(BACKGROUNDS)), tuple(sorted(shapes)))


def random_look(scene: Scene, rng: random.Random) -> Look:
    """A canvas of 64-112 px sides, a third each roughly square, wide (1.3-1.75) and tall."""
    shape = rng.choice(("square", "wide", "tall"))
    if shape == "square":
        w = rng.randint(64, 96)
        h = max(64, w + rng.randint(-6, 6))
    else:
        short = rng.randint(64, 76)
        w, h = short, min(112, round(short * rng.uniform(1.3, 1.75)))
        if shape == "wide":
            w, h = h, w
    jitter = tuple((s.kind, rng.uniform(-JITTER, JITTER), rng.uniform(-JITTER, JITTER)) for s in scene.shapes)
    return Look(w, h, rng.random() < 0.4, jitter)


def render(scene: Scene, look: Look) -> Image.Image:
    """Draw the scene: flat colours, no antialiasing, so every pixel is a palette colour or background."""
    bg = BACKGROUNDS[scene.background]
    image = Image.new("RGB", (look.width, look.height), bg)
    draw = ImageDraw.Draw(image)
    if look.gradient:
        for y in range(look.height):
            fade = 1 - 0.08 * y / look.height
            draw.line([(0, y), (look.width, y)], fill=tuple(round(v * fade) for v in bg))
    jitter = {kind: (dx, dy) for kind, dx, dy in look.jitter}
    short = min(look.width, look.height)
    for s in scene.shapes:
        dx, dy = jitter[s.kind]
        cx, cy = (GRID[s.col] + dx) * look.width, (GRID[s.row] + dy) * look.height
        half = SIZES[s.size] * short / 2
        fill = COLORS[s.color]
        if s.kind == "circle":
            draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
        elif s.kind == "square":
            draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
        else:
            r = half * POINTED_SCALE
            if s.kind == "triangle":
                points = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
            else:
                points = [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
            draw.polygon(points, fill=fill)
    return image


# ---- words: synonyms shared by absolute descriptions here and relative captions in `cirr` ----

KIND_WORDS = {"circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",),
              "diamond": ("diamond", "rhombus")}  # fmt: skip
COLOR_WORDS = {c: (c,) for c in COLORS} | {"purple": ("purple", "violet")}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_ROW_WORDS = ("top", "middle", "bottom")
_COL_WORDS = ("left", "center", "right")


def position_phrase(row: int, col: int, rng: random.Random) -> str:
    """Where an added shape goes, in words: "in the top left corner", "on the right", ..."""
    if (row, col) == (1, 1):
        return rng.choice(("in the center", "in the middle"))
    if row == 1:
        return rng.choice((f"on the {_COL_WORDS[col]}", f"on the {_COL_WORDS[col]} side"))
    if col == 1:
        return rng.choice((f"at the {_ROW_WORDS[row]}", f"at the {_ROW_WORDS[row]} center"))
    return rng.choice(
        (f"in the {_ROW_WORDS[row]} {_COL_WORDS[col]} corner", f"at the {_ROW_WORDS[row]} {_COL_WORDS[col]}")
    )


def describe(scene: Scene, rng: random.Random) -> str:
    """An absolute caption of a whole scene ("a big red disc in the top left corner, ..."): the toy
    image-text corpus the tiny BLIP-2 is pretrained on, with the relative captions' synonyms."""
    parts = []
    for s in rng.sample(scene.shapes, len(scene.shapes)):
        words = (rng.choice(SIZE_WORDS[s.size]), rng.choice(COLOR_WORDS[s.color]), rng.choice(KIND_WORDS[s.kind]))
        parts.append(f"a {' '.join(words)} {position_phrase(s.row, s.col, rng)}")
    return rng.choice((", ", " and ")).join(parts)
