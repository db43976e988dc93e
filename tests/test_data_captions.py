"""Caption cleaning (LAVIS blip_caption) and the FashionIQ joins, on awkward strings."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sprc_lib.data.captions import clean_caption, fashioniq_eval_caption, fashioniq_train_caption


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Make the Dog RED!!", "make the dog red"),
        ('a "quoted" (thing)*#:;~ here', "a quoted thing here"),
        ("two   spaces  and\ttab  runs", "two spaces and\ttab runs"),  # a lone tab survives, as in LAVIS
        ("ends with a newline\n", "ends with a newline"),
        ("ends with a period.\n", "ends with a period"),
        ("  padded both sides  ", "padded both sides"),
        ("", ""),
        ("...!!!", ""),
        ("keeps commas, hyphen-ated, it's and why?", "keeps commas, hyphen-ated, it's and why?"),
        ("line\nbreak inside", "line\nbreak inside"),
        ("mr. smith: the end.", "mr smith the end"),
    ],
)
def test_clean_caption_matches_lavis(raw, clean):
    assert clean_caption(raw) == clean


def test_clean_caption_keeps_at_most_max_words():
    words = [f"w{i}" for i in range(60)]
    assert clean_caption(" ".join(words)) == " ".join(words[:50])
    assert clean_caption(" ".join(words), max_words=3) == "w0 w1 w2"
    assert clean_caption("a b c", max_words=3) == "a b c"


@pytest.mark.parametrize(
    ("c0", "c1", "joined"),
    [
        ("is red.", "has stripes?", "Is red and has stripes"),
        ("  is Blue ,", "IS longer.", "Is blue and IS longer"),  # capitalize() lowers the rest of c0 only
        ("", "has shorter sleeves", " and has shorter sleeves"),
        ("is shiny and silver", "", "Is shiny and silver and "),
        ("?.,", "...", " and "),
    ],
)
def test_fashioniq_eval_caption(c0, c1, joined):
    assert fashioniq_eval_caption(c0, c1) == joined


def test_fashioniq_train_caption_draws_the_four_forms_evenly():
    rng = random.Random(0)
    counts = Counter(fashioniq_train_caption("is red.", "has stripes?", rng) for _ in range(8000))
    assert set(counts) == {"Is red and has stripes", "Has stripes and is red", "Is red", "Has stripes"}
    assert all(0.22 < n / 8000 < 0.28 for n in counts.values())


def test_fashioniq_train_caption_is_deterministic_for_an_rng_state():
    draws = [[fashioniq_train_caption("a", "b", random.Random(seed)) for seed in range(50)] for _ in range(2)]
    assert draws[0] == draws[1]
    assert len(set(draws[0])) == 4
