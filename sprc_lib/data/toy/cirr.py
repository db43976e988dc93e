"""CIRR-like toy triplets: edits between scenes, relative captions stating them, and the splits.

The scenes themselves (shapes, drawing, absolute descriptions) live in `scenes`. A scene is unique
within a split, so a reference plus the edits a caption states pick out exactly one gallery image.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from sprc_lib.data.schema import CIRR_IMAGE_FOLDERS, CIRR_SET_SIZE, CIRR_TRAIN_SUBFOLDERS
from sprc_lib.data.toy.scenes import (
    COLOR_WORDS,
    COLORS,
    KIND_WORDS,
    KINDS,
    MAX_SHAPES,
    SIZE_WORDS,
    SIZES,
    Look,
    Scene,
    Shape,
    position_phrase,
    random_look,
    random_scene,
)

DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (d_row, d_col)
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
OPS = ("recolor", "move", "resize", "swap", "add", "remove")
_OP_WEIGHTS = (3, 3, 2, 2, 1.5, 1.5)


@dataclass(frozen=True)
class Edit:
    """One change: `kind` names the shape before the edit (for add, the new shape's kind);
    `value` is the new colour / direction / size / kind, the added Shape, or None for remove."""

    op: str
    kind: str
    value: str | Shape | None = None


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The scene after `edit`; ValueError when the edit does not fit the scene."""
    if edit.op == "add":
        new = edit.value
        assert isinstance(new, Shape)
        if new.kind in scene.kinds() or (new.row, new.col) not in scene.free_cells():
            raise ValueError(f"cannot add {new} to {scene}")
        if len(scene.shapes) >= MAX_SHAPES:
            raise ValueError(f"{scene} already has {MAX_SHAPES} shapes")
        return scene.with_shapes([*scene.shapes, new])
    old = scene.shape(edit.kind)
    others = [s for s in scene.shapes if s.kind != edit.kind]
    if edit.op == "remove":
        if not others:
            raise ValueError("cannot remove the only shape")
        return scene.with_shapes(others)
    if edit.op == "recolor":
        new = replace(old, color=edit.value)
    elif edit.op == "resize":
        new = replace(old, size=edit.value)
    elif edit.op == "swap":
        if edit.value in scene.kinds():
            raise ValueError(f"{scene} already has a {edit.value}")
        new = replace(old, kind=edit.value)
    elif edit.op == "move":
        d_row, d_col = DIRECTIONS[str(edit.value)]
        new = replace(old, row=old.row + d_row, col=old.col + d_col)
        if (new.row, new.col) not in scene.free_cells():
            raise ValueError(f"cannot move the {old.kind} {edit.value}")
    else:
        raise ValueError(f"unknown edit {edit.op!r}")
    if new == old:
        raise ValueError(f"{edit} changes nothing")
    return scene.with_shapes([*others, new])


def apply_edits(scene: Scene, edits: tuple[Edit, ...]) -> Scene:
    for edit in edits:
        scene = apply_edit(scene, edit)
    return scene


def invert(scene: Scene, edits: tuple[Edit, ...]) -> tuple[Edit, ...]:
    """The edits that take `apply_edits(scene, edits)` back to `scene` (for reverse triplets)."""
    undo = []
    for edit in edits:
        if edit.op == "add":
            undo.append(Edit("remove", edit.kind))
        elif edit.op == "remove":
            undo.append(Edit("add", edit.kind, scene.shape(edit.kind)))
        elif edit.op == "recolor":
            undo.append(Edit("recolor", edit.kind, scene.shape(edit.kind).color))
        elif edit.op == "resize":
            undo.append(Edit("resize", edit.kind, scene.shape(edit.kind).size))
        elif edit.op == "swap":
            undo.append(Edit("swap", str(edit.value), edit.kind))
        else:
            undo.append(Edit("move", edit.kind, OPPOSITE[str(edit.value)]))
        scene = apply_edit(scene, edit)
    return tuple(reversed(undo))


def touched_kind(edit: Edit) -> str | None:
    """The kind of the shape an edit leaves behind (None when it removed it)."""
    if edit.op == "remove":
        return None
    return str(edit.value) if edit.op == "swap" else edit.kind


def compatible(first: Edit, second: Edit) -> bool:
    """Two edits make one natural caption: separate shapes, or one shape changed in two ways.

    Add/remove never share a shape with the other edit (no "add a circle and make it blue"), and
    a removed kind is not re-added (that would read as a recolour or a move).
    """
    same = second.kind == touched_kind(first)
    if first.op in ("add", "remove") or second.op in ("add", "remove"):
        readded = first.op == "remove" and second.op == "add" and second.kind == first.kind
        return not same and not readded
    return not same or first.op != second.op


def random_edit(scene: Scene, rng: random.Random) -> Edit:
    """One edit that fits `scene`, ops weighted so colour and position changes are most common."""
    while True:
        op = rng.choices(OPS, weights=_OP_WEIGHTS)[0]
        if op == "add":
            free_kinds = [k for k in KINDS if k not in scene.kinds()]
            if len(scene.shapes) < MAX_SHAPES:
                row, col = rng.choice(scene.free_cells())
                shape = Shape(
                    rng.choice(free_kinds), rng.choice(list(COLORS)), rng.choice(list(SIZES)), row, col
                )
                return Edit("add", shape.kind, shape)
            continue
        if op == "remove" and len(scene.shapes) == 1:
            continue
        old = rng.choice(scene.shapes)
        if op == "remove":
            return Edit("remove", old.kind)
        if op == "recolor":
            return Edit("recolor", old.kind, rng.choice([c for c in COLORS if c != old.color]))
        if op == "resize":
            return Edit("resize", old.kind, "small" if old.size == "large" else "large")
        if op == "swap":
            return Edit("swap", old.kind, rng.choice([k for k in KINDS if k not in scene.kinds()]))
        free = set(scene.free_cells())
        moves = [d for d, (dr, dc) in DIRECTIONS.items() if (old.row + dr, old.col + dc) in free]
        if moves:
            return Edit("move", old.kind, rng.choice(moves))


def random_edits(scene: Scene, rng: random.Random, two_edit_p: float = 0.45) -> tuple[Edit, ...]:
    """One edit, or (with `two_edit_p`) two compatible ones, as one caption states them."""
    first = random_edit(scene, rng)
    if rng.random() >= two_edit_p:
        return (first,)
    middle = apply_edit(scene, first)
    for _ in range(20):
        second = random_edit(middle, rng)
        if compatible(first, second):
            return (first, second)
    return (first,)


# ---- captions: several templates and synonyms per edit, so the task needs language, not lookup ----

DIRECTION_WORDS = {
    "left": ("left", "to the left", "leftwards"),
    "right": ("right", "to the right", "rightwards"),
    "up": ("up", "upwards", "higher"),
    "down": ("down", "downwards", "lower"),
}
TEMPLATES = {
    "recolor": ("make {obj} {color}", "change {obj} to {color}", "turn {obj} {color}", "paint {obj} {color}",
                "color {obj} {color}", "{obj} should be {color}", "recolor {obj} from {old} to {color}"),
    "move": ("move {obj} {dir}", "shift {obj} {dir}", "slide {obj} {dir}", "push {obj} one step {dir}",
             "{obj} should be moved {dir}", "nudge {obj} {dir}"),
    "resize:large": ("make {obj} bigger", "make {obj} larger", "enlarge {obj}", "increase the size of {obj}",
                     "{obj} should be bigger"),
    "resize:small": ("make {obj} smaller", "shrink {obj}", "reduce the size of {obj}",
                     "{obj} should be smaller", "make {obj} a bit smaller"),
    "swap": ("replace {obj} with a {kind}", "turn {obj} into a {kind}", "change {obj} into a {kind}",
             "swap {obj} for a {kind}", "{obj} should be a {kind} instead", "make {obj} a {kind}"),
    "add": ("add {shape} {pos}", "put {shape} {pos}", "insert {shape} {pos}", "include {shape} {pos}",
            "{pos} add {shape}"),
    "remove": ("remove {obj}", "take away {obj}", "get rid of {obj}", "delete {obj}", "{obj} should be gone",
               "erase {obj}"),
}  # fmt: skip
JOINERS = (" and ", " and then ", ", then ", "; also ", " and also ")


def _clause(scene: Scene, edit: Edit, pronoun: bool, rng: random.Random) -> str:
    if edit.op == "add":
        s = edit.value
        assert isinstance(s, Shape)
        words = (
            rng.choice(SIZE_WORDS[s.size]),
            rng.choice(COLOR_WORDS[s.color]),
            rng.choice(KIND_WORDS[s.kind]),
        )
        shape = "a " + " ".join(words)
        return rng.choice(TEMPLATES["add"]).format(shape=shape, pos=position_phrase(s.row, s.col, rng))
    old = scene.shape(edit.kind)
    key = f"resize:{edit.value}" if edit.op == "resize" else edit.op
    template = rng.choice(TEMPLATES[key])
    if pronoun:
        obj = "it"
    elif rng.random() < 0.35 and "{old}" not in template:
        obj = f"the {rng.choice(COLOR_WORDS[old.color])} {rng.choice(KIND_WORDS[old.kind])}"
    else:
        obj = f"the {rng.choice(KIND_WORDS[old.kind])}"
    value = str(edit.value)
    return template.format(
        obj=obj,
        color=rng.choice(COLOR_WORDS.get(value, ("",))),
        old=rng.choice(COLOR_WORDS[old.color]),
        dir=rng.choice(DIRECTION_WORDS.get(value, ("",))),
        kind=rng.choice(KIND_WORDS.get(value, ("",))),
    )


def caption(scene: Scene, edits: tuple[Edit, ...], rng: random.Random) -> str:
    """A relative caption stating `edits` in order; "it" may stand for the shape the first edit touched."""
    clauses = []
    for i, edit in enumerate(edits):
        pronoun = i > 0 and edit.kind == touched_kind(edits[i - 1]) and rng.random() < 0.7
        clauses.append(_clause(scene, edit, pronoun, rng))
        scene = apply_edit(scene, edit)
    text = rng.choice(JOINERS).join(clauses)
    if rng.random() < 0.15 and not text.startswith(("the ", "it ", "in ", "on ", "at ")):
        text = "please " + text
    if rng.random() < 0.25:
        text = text[0].upper() + text[1:] + "."
    return text


# ---- one split: families of near-duplicate scenes, grouped into 6-image sets like NLVR2's ----

SETS_PER_FAMILY = 4  # set centres one edit from a shared base: look-alikes beyond the set itself
REVERSE_P = 0.5  # train only: chance that a set edge also yields the reverse triplet


@dataclass(frozen=True)
class CirrImage:
    name: str
    relpath: str
    scene: Scene
    look: Look


@dataclass(frozen=True)
class CirrQuery:
    pair_id: int
    reference: str
    target: str
    edits: tuple[Edit, ...]
    caption: str
    set_id: int
    members: tuple[str, ...]
    reference_rank: int
    target_rank: int


def _grow(
    parent: Scene, rng: random.Random, taken: set[Scene], single: bool
) -> tuple[Scene, tuple[Edit, ...]]:
    """A scene 1-2 edits from `parent` that no image of the split has yet."""
    for _ in range(200):
        edits = random_edits(parent, rng, two_edit_p=0.0 if single else 0.45)
        child = apply_edits(parent, edits)
        if child not in taken:
            taken.add(child)
            return child, edits
    raise RuntimeError(f"could not find a new variant of {parent}")


def _unique_name(prefix: str, rng: random.Random, used: set[str], n_images: int) -> str:
    """NLVR2-style `<prefix>-<n>-<k>-img<j>`, never repeated within the dataset."""
    while True:
        name = f"{prefix}-{rng.randrange(4 * n_images)}-{rng.randrange(4)}-img{rng.randrange(2)}"
        if name not in used:
            used.add(name)
            return name


def generate_split(
    split: str, n_sets: int, first_pair_id: int, rng: random.Random
) -> tuple[list[CirrImage], list[CirrQuery]]:
    """Scenes, names and triplets of one split (no drawing).

    A set is a centre scene and 5 variants, each 1-2 edits from it; every centre -> variant edge is a
    triplet whose `img_set` is the set. Seen from the centre, all 5 other members are a few edits
    away, so the reference alone does not tell which one the caption means (Recall_subset stays
    near its 20% chance level without the text). The sets of a family have centres one edit from a
    shared base, adding look-alikes outside the set. Train also gets some reverse (variant ->
    centre) triplets, for volume. Pair ids count up from `first_pair_id` in file order.
    """
    folder = CIRR_IMAGE_FOLDERS[split]
    taken: set[Scene] = set()
    used_names: set[str] = set()
    images: list[CirrImage] = []
    queries: list[CirrQuery] = []
    for set_id in range(n_sets):
        if set_id % SETS_PER_FAMILY == 0:
            base = random_scene(rng)
            while base in taken:
                base = random_scene(rng)
            taken.add(base)
            center = base
        else:
            center, _ = _grow(base, rng, taken, single=True)
        variants = [_grow(center, rng, taken, single=False) for _ in range(CIRR_SET_SIZE - 1)]
        scenes = [center] + [scene for scene, _ in variants]
        names = [_unique_name(folder, rng, used_names, n_sets * CIRR_SET_SIZE) for _ in scenes]
        for name, scene in zip(names, scenes, strict=True):
            sub = f"{rng.randrange(CIRR_TRAIN_SUBFOLDERS)}/" if split == "train" else ""
            images.append(CirrImage(name, f"./{folder}/{sub}{name}.png", scene, random_look(scene, rng)))
        members = tuple(rng.sample(names, len(names)))
        rank = rng.sample(range(len(names)), len(names))  # NLVR2-like set ranks: an order of their own
        for child, (_, edits) in enumerate(variants, start=1):
            pairs = [(0, child, edits)]
            if split == "train" and rng.random() < REVERSE_P:
                pairs.append((child, 0, invert(center, edits)))
            for ref, tgt, eds in pairs:
                text = caption(scenes[ref], eds, rng)
                query = CirrQuery(0, names[ref], names[tgt], eds, text, set_id, members, rank[ref], rank[tgt])
                queries.append(query)
    rng.shuffle(images)
    rng.shuffle(queries)
    return images, [replace(q, pair_id=first_pair_id + i) for i, q in enumerate(queries)]


def query_record(query: CirrQuery, with_target: bool) -> dict:
    """The `cap.rc2.<split>.json` record, fields in the release's order; test1 hides the target."""
    record: dict = {"pairid": query.pair_id, "reference": query.reference}
    if with_target:
        record |= {"target_hard": query.target, "target_soft": {query.target: 1.0}}
    record["caption"] = query.caption
    img_set: dict = {
        "id": query.set_id,
        "members": list(query.members),
        "reference_rank": query.reference_rank,
    }
    if with_target:
        img_set["target_rank"] = query.target_rank
    record["img_set"] = img_set
    return record
