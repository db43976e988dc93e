"""Full mode's locations: read from LOCATIONS' variables only, and a stop (not a traceback) for what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell

from sprc_lib.course.setup import LOCATIONS, CourseStop, setup
from sprc_lib.course.shipped import SHIPPED
from sprc_lib.model.config import preset_config
from sprc_lib.model.loading import load_model, model_sizes
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.paths import toy_root


@pytest.fixture(autouse=True)
def threads():
    """`setup("tiny")` sets one torch thread for the process; later tests compare with runs at the default."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def full(monkeypatch, tmp_path):
    """Full mode with nothing set but the data folder (an empty one)."""
    for name in [*LOCATIONS, "SPRC_HOME"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPRC_DATA", str(tmp_path / "data"))
    return tmp_path


def test_full_mode_reads_every_location_from_its_variable(full, monkeypatch):
    values = {"SPRC_BLIP2": "some/blip2", "SPRC_CIRR_CHECKPOINT": str(full / "a.pt"),
              "SPRC_FIQ_CHECKPOINT": str(full / "b.pt"), "SPRC_CIRR_MODEL": str(full / "cirr"),
              "SPRC_FIQ_MODEL": str(full / "fiq"), "SPRC_CIRR_RERANKER": str(full / "rc"),
              "SPRC_FIQ_RERANKER": str(full / "rf"), "SPRC_MAX_STEPS": "7", "SPRC_MAX_QUERIES": "9",
              "SPRC_SKIP_MISSING": "0", "SPRC_STANDIN_WEIGHTS": "1"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    course = setup("full")
    seen = course.locations()
    assert set(seen) == set(LOCATIONS)
    assert {name: str(value) for name, value in seen.items()} == {**values, "SPRC_DATA": str(full / "data")}
    assert course.bounded(100) == 7 and course.bounded(3) == 3
    assert course.bounded_queries(None) == 9 and course.bounded_queries(200) == 9 and course.bounded_queries(4) == 4
    assert not course.skip_missing and course.standin_weights


def test_full_mode_defaults(full):
    course = setup("full")
    assert course.weights == "Salesforce/blip2-itm-vit-g" and course.max_steps is None and course.bounded(100) == 100
    assert course.max_queries is None and course.bounded_queries(None) is None and course.bounded_queries(200) == 200
    assert course.checkpoints == {"CIRR": full / "data" / "checkpoints" / "sprc_cirr.pt",
                                  "FashionIQ": full / "data" / "checkpoints" / "sprc_fiq.pt"}
    assert course.models == {"CIRR": None, "FashionIQ": None} and not course.has_trained("CIRR")
    assert course.skip_missing and not setup("tiny").skip_missing  # real FashionIQ copies always lack images
    assert not course.standin_weights  # trained models: the notebooks make their claims
    model = load_model(SHIPPED / "CIRR")
    assert course.context(model, load_tokenizer(SHIPPED / "CIRR")).skip_missing  # what evaluation reads


@pytest.mark.parametrize(("call", "words"), [
    (lambda c: c.need_data("CIRR"), ["cirr_dataset", "data/README.md", "unpack-data", "SPRC_DATA"]),
    (lambda c: c.released("FashionIQ"), ["sprc_fiq.pt", "notebook 06", "SPRC_FIQ_CHECKPOINT"]),
    (lambda c: c.trained("CIRR"), ["SPRC_CIRR_MODEL", "notebook 04", "notebook 06"]),
    (lambda c: c.trained_reranker("FashionIQ"), ["SPRC_FIQ_RERANKER", "train-reranker", "best/"]),
    (lambda c: c.unpack({"CIRR": "nowhere/cirr.zip"}), ["nowhere/cirr.zip", "ARCHIVES", "run this cell again"]),
])
def test_what_only_the_user_can_supply_stops_with_what_to_do(full, call, words):
    with pytest.raises(CourseStop) as stop:
        call(setup("full"))
    assert all(word in str(stop.value) for word in words), str(stop.value)
    assert "--data-path" not in str(stop.value)  # a notebook has no flags to pass


def test_a_model_folder_that_is_not_there_is_named(full, monkeypatch):
    monkeypatch.setenv("SPRC_FIQ_MODEL", str(full / "nowhere"))
    with pytest.raises(CourseStop, match="SPRC_FIQ_MODEL=.*nowhere: no such folder"):
        setup("full").trained("FashionIQ")


@pytest.mark.parametrize("name", ["SPRC_MAX_STEPS", "SPRC_MAX_QUERIES"])
@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_wrong_bound_is_refused(full, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(CourseStop, match=f"{name}={value!r}: give a whole number of at least 1"):
        setup("full")


@pytest.mark.parametrize("value", ["yes", "2", "true"])
def test_a_wrong_switch_is_refused(full, monkeypatch, value):
    monkeypatch.setenv("SPRC_SKIP_MISSING", value)
    with pytest.raises(CourseStop, match=f"SPRC_SKIP_MISSING={value!r}: give 1 or 0"):
        setup("full")


def test_a_stop_shows_in_a_notebook_as_its_message_without_a_traceback(capsys):
    shell = InteractiveShell.instance()
    shell.run_cell("from sprc_lib.course.setup import CourseStop\nraise CourseStop('no CIRR here; get it')")
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "STOPPED: no CIRR here; get it" in text and "Traceback" not in text, text


def test_sizes_come_from_the_blip2_the_course_starts_from():
    """A released file carries no sizes: read them from the BLIP-2 folder, as a preset would give them."""
    blip2 = toy_root() / "tiny-blip2"
    assert model_sizes(str(blip2), 282).to_dict() == preset_config("tiny", 282).to_dict()
    assert setup("tiny").sizes(282).to_dict() == preset_config("tiny", 282).to_dict()
    assert Path(setup("tiny").weights) == blip2
