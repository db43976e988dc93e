"""Caption text as the reference feeds it to the model: LAVIS cleaning and the FashionIQ joins."""

from __future__ import annotations

import random
import re

_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
_WHITESPACE_RUNS = re.compile(r"\s{2,}")
_FIQ_STRIP = ".?, "


def clean_caption(text: str, max_words: int = 50) -> str:
    """LAVIS `blip_caption` (BlipCaptionProcessor.pre_caption), step for step.

    Lowercase; each of .!"()*#:;~ becomes a space; runs of 2+ whitespace become one space; a
    trailing newline and surrounding spaces go; then at most `max_words` space-separated words.
    A lone tab or newline inside the text survives, as it does in LAVIS.
    """
    text = _PUNCTUATION.sub(" ", text.lower())
    text = _WHITESPACE_RUNS.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    if len(words) > max_words:
        text = " ".join(words[:max_words])
    return text


def fashioniq_eval_caption(c0: str, c1: str) -> str:
    """The deterministic validation/test query: both relative captions joined by "and"."""
    return f"{c0.strip(_FIQ_STRIP).capitalize()} and {c1.strip(_FIQ_STRIP)}"


def fashioniq_train_caption(c0: str, c1: str, rng: random.Random) -> str:
    """Training augmentation (CLIP4Cir/SPRC): with p=1/4 each "c0 and c1", "c1 and c0", "c0", "c1".

    The first caption is always capitalised, as in the reference.
    """
    first, second = (c0, c1) if rng.random() < 0.5 else (c1, c0)
    if rng.random() < 0.5:
        return fashioniq_eval_caption(first, second)
    return first.strip(_FIQ_STRIP).capitalize()
