"""`make models RETRAIN=1` on this machine: the whole toy track trained again lands inside the band measured
over seeds (sprc_lib/course/retraining_spread.json), and says that it is a local retraining.

Weights trained on another CPU differ from the shipped ones (floating point differs, and training amplifies
it), so this never compares weights: it checks that the recipe still learns what it learned over the seeds.
"""

from __future__ import annotations

import json

import pytest

from sprc_lib.course import reference
from sprc_lib.course.run import run_course
from sprc_lib.course.shipped import is_shipped
from sprc_lib.training.tiny_layout import model_folder, model_names


@pytest.mark.models
@pytest.mark.slow
def test_a_retraining_lands_in_the_measured_band_and_says_it_is_local(toy_copy, capsys):
    assert run_course(toy_copy, retrain=True, models_only=True) == 0
    said = capsys.readouterr().out
    for name in model_names():
        assert not is_shipped(name, model_folder(name, toy_copy)), f"{name} was copied, not retrained"
        assert f"{model_folder(name, toy_copy)}: a local retraining, not the course's reference weights" in said
    found = reference.results(toy_copy)
    outside = []
    for dataset, stages in reference.band(json.loads(reference.SPREAD.read_text())).items():
        for stage, keys in stages.items():
            for key, (low, high) in keys.items():
                lowest, highest = reference.tolerance(low, high)
                if not lowest <= found[dataset][stage][key] <= highest:
                    outside.append(f"{dataset} {stage} {key}: {found[dataset][stage][key]:.1f} outside "
                                   f"{lowest:.1f}-{highest:.1f} (seeds {low:.1f}-{high:.1f})")
    assert not outside, "\n".join(outside)
