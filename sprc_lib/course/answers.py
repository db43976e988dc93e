"""The answer key of the course's exercises: what their checks compare a student's values with.

A student copy (`sprc_lib.course.student`) keeps each exercise's check cell, so a check that worked its
answer out in the notebook would show the student the code the exercise asks for. The checks call these
functions instead; each says which exercise it answers and takes the chapter's objects the answer depends
on. The course notebooks' worked solutions must agree with them (nbval runs both).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import torch
from torch import Tensor

from sprc_lib.course.curves import learning_rates
from sprc_lib.course.rerank_tour import recall_curve
from sprc_lib.course.setup import course_mode
from sprc_lib.evaluation.metrics import cirr_averages as linear_averages
from sprc_lib.evaluation.metrics import rank_gallery
from sprc_lib.model import LOSS_NAMES, run_checkpoint
from sprc_lib.model.lavis import LAVIS_MODEL_KEY, CheckpointError, lavis_to_project, load_lavis_state
from sprc_lib.model.tokenizer import tokenize
from sprc_lib.training.recipes import Recipe
from sprc_lib.training.runs import CHECKPOINT, HYPERPARAMETERS, read_csv


def mode_for(value: str) -> str:
    """00, exercise 2: what `course_mode()` says with SPRC_MODE=value ("ValueError: ..." if it refuses it)."""
    with mock.patch.dict(os.environ, {"SPRC_MODE": value}):  # the environment as it was, afterwards
        try:
            return course_mode()
        except ValueError as err:
            return f"ValueError: {err}"


def end_shares(recipe: Recipe) -> dict[bool, float]:
    """04, exercise 1: the last step's learning rate as a share of the peak, at 50 steps per epoch, with the
    recipe's own schedule layout (False) and laid over the run (True)."""
    shares = {}
    for over_run in (False, True):
        rates = learning_rates(recipe, steps_per_epoch=50, over_run=over_run)
        shares[over_run] = rates[-1] / max(rates)
    return shares


def fell_most(run_dir: str | Path) -> str:
    """04, exercise 2: the loss term whose last epoch's mean is the smallest share of its first's."""
    rows = read_csv(Path(run_dir) / "train_metrics.csv")
    return min(LOSS_NAMES, key=lambda name: rows[-1][name] / rows[0][name])


def steps_left(run_dir: str | Path) -> int:
    """04, exercise 3: how many steps resuming the run trains: the run's epochs of steps, less those its checkpoint
    has done."""
    run_dir = Path(run_dir)
    plan = json.loads((run_dir / HYPERPARAMETERS).read_text())
    done = run_checkpoint.read(run_dir / CHECKPOINT)["position"]
    return plan["recipe"]["num_epochs"] * plan["steps_per_epoch"] - done["global_step"]


def shared_names(first, second) -> int:
    """00, exercise 3, and 05, exercise 3: how many images two retrievals' top-k have in common."""
    return len(set(first.names).intersection(second.names))


def distinct_texts(texts: Sequence[str]) -> int:
    """01, exercise 2: how many different texts a list holds."""
    return len(dict.fromkeys(texts))


def vitg_tokens_and_ratio() -> tuple[int, float]:
    """02, exercise 1: ViT-g's tokens at 224 px with 14 px patches ([CLS] included), and how many times more
    numbers they hold than the Q-Former's 32 query tokens of width 768 (to one decimal)."""
    tokens = 1 + (224 // 14) ** 2
    return tokens, round(tokens * 1408 / (32 * 768), 1)


def mean_pooled(texts: Tensor, gallery: Tensor, truth: Tensor) -> tuple[Tensor, float]:
    """02, exercise 2: each caption's score against each image with the query tokens averaged, not maxed,
    and the R@1 (%) those scores give."""
    scores = torch.einsum("td,nqd->tnq", texts.float().cpu(), gallery.float().cpu()).mean(-1)
    return scores, 100 * float((scores.argmax(1) == truth).float().mean())


def text_scores(model, tokenizer, text: str, gallery: Tensor) -> Tensor:
    """02, exercise 3: one text's scores against every gallery image (the model's max over query tokens)."""
    ids, mask = tokenize(tokenizer, [text], model.config.max_txt_len)
    with torch.no_grad():
        features = model.text_features(ids.to(gallery.device), mask.to(gallery.device))
        return model.scores(features, gallery)[0].cpu()


def blind_metrics(model, evaluate, in_batches, ids: Tensor, mask: Tensor) -> dict[str, float]:
    """03, exercise 1: the chapter's metrics (`evaluate`) of the text pass fed the plain query tokens, which never
    saw an image, in place of the sentence-level prompt."""
    return evaluate(in_batches(lambda i, m: model.text_pass(model.query_tokens.expand(len(i), -1, -1), i, m),
                               ids, mask))


def lavis_names(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """06, exercise 1: this library's names of LAVIS `keys`, in order, and the keys no rule knows."""
    renamed, unknown = lavis_to_project({key: torch.empty(0) for key in keys})
    return list(renamed), list(unknown)


def damaged_message(state: dict[str, Tensor], sizes) -> str:
    """06, exercise 2: the converter's error on `state` without "prompt_tokens" and with "text_proj.weight" one row
    short."""
    damaged = {k: v for k, v in state.items() if k != "prompt_tokens"}
    damaged["text_proj.weight"] = damaged["text_proj.weight"][:-1]
    try:
        load_lavis_state({LAVIS_MODEL_KEY: damaged}, sizes, "damaged file")
    except CheckpointError as error:
        return str(error)
    raise AssertionError("the converter took a damaged file")


def cirr_averages(row: dict[str, float]) -> tuple[float, float]:
    """06, exercise 3: a CIRR row's mean of R@5 and Rs@1, and the mean of its seven recalls."""
    averages = linear_averages(row)
    return averages["mean_r5_rs1"], averages["arithmetic_mean"]


def fusion_sweep(two, k: int, alphas: Sequence[float]) -> list[float]:
    """07, exercise 1: R@1 (%) after re-ordering the top `k` with each fusion weight in `alphas`."""
    return [two.metrics(two.reranked(k, alpha))["recall_at1"] for alpha in alphas]


def reference_first(retriever) -> float:
    """05, exercise 1: the share of queries (%) whose own reference ranks first when nothing is excluded."""
    first = rank_gallery(retriever.all_scores())[:, 0]
    references = torch.tensor([retriever.gallery_names.index(q.reference) for q in retriever.queries])
    return 100 * float((first == references).float().mean())


def recall_of_kind(retriever, k: int, words: set[str]) -> float | None:
    """05, exercise 2: R@10 (%) over the queries whose text holds one of `words` as a whole word (None: no
    such query)."""
    picked = [r for r in retriever.retrievals(k=k) if words & set(re.findall(r"[a-z]+", r.query.text.lower()))]
    return 100 * sum(r.target_rank <= 10 for r in picked) / len(picked) if picked else None


def negative_scores(s: Tensor, negative_target: Tensor) -> tuple[float, float]:
    """07, exercise 2: the mean miner score of each query's drawn negative, and of every target but its own."""
    rows = torch.arange(len(s), device=s.device)
    others = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    return float(s[rows, negative_target].mean()), float(s[others].mean())


def first_k_reaching(ranks: Tensor, percent: float, gallery_size: int) -> int:
    """07, exercise 3: the smallest K whose Recall@K (`recall_curve`, the chapter's) reaches `percent`."""
    return next(k for k in range(1, gallery_size + 1) if recall_curve(ranks, [k])[0] >= percent)
