"""Retrieval metrics on small hand-worked cases; the expected numbers are derived in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from sprc_lib.evaluation.metrics import (
    KEEP_BEST_KEY,
    chance_levels,
    cirr_metrics,
    cirr_rankings,
    fashioniq_metrics,
    fashioniq_summary,
    index_names,
    rank_gallery,
)

IMGS = [f"img{i}" for i in range(8)]


def _row(values: dict[str, float], names: list[str] = IMGS) -> list[float]:
    """A score row from {name: score}; unnamed images score 0."""
    return [values.get(n, 0.0) for n in names]


def test_hand_worked_two_queries_all_metrics() -> None:
    # Query 0: reference img3, target img5. Scores give the full order
    #   img3 img0 img1 img2 img4 img5 img6 img7; removing the reference img3 leaves
    #   img0 img1 img2 img4 img5 ... so the target is 5th: R@1 no, R@5/10/50 yes.
    #   Group {img3 (ref), img7, img5, img6, img1, img2} minus img3, in global order:
    #   img1 img2 img5 img6 img7 -> target 3rd: Rs@1 no, Rs@2 no, Rs@3 yes.
    # Query 1: reference img0, target img7 scored highest: everything yes.
    scores = torch.tensor(
        [
            _row({"img3": 0.9, "img0": 0.8, "img1": 0.7, "img2": 0.6, "img4": 0.5, "img5": 0.4, "img6": 0.3}),
            _row({"img7": 0.9, "img0": 0.8, "img1": 0.1}),
        ]
    )
    m = cirr_metrics(
        scores,
        IMGS,
        reference_names=["img3", "img0"],
        target_names=["img5", "img7"],
        group_members=[
            ["img3", "img7", "img5", "img6", "img1", "img2"],
            ["img0", "img7", "img1", "img2", "img3", "img4"],
        ],
    )
    # Per metric over 2 queries: R@1 1/2, R@5 2/2, R@10 2/2, R@50 2/2, Rs@1 1/2, Rs@2 1/2, Rs@3 2/2.
    expected = {
        "recall_at1": 50.0,
        "recall_at5": 100.0,
        "recall_at10": 100.0,
        "recall_at50": 100.0,
        "recall_subset_at1": 50.0,
        "recall_subset_at2": 50.0,
        "recall_subset_at3": 100.0,
        "mean_r5_rs1": (100.0 + 50.0) / 2,
        # Seven numbers: three 50s and four 100s.
        "arithmetic_mean": (3 * 50.0 + 4 * 100.0) / 7,
        "harmonic_mean": 7 / (3 / 50.0 + 4 / 100.0),  # = 70
        "geometric_mean": (50.0**3 * 100.0**4) ** (1 / 7),
    }
    assert m.keys() == expected.keys()
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
    assert m[KEEP_BEST_KEY["CIRR"]] == pytest.approx(expected["arithmetic_mean"])


def test_reference_ranked_first_is_removed_and_target_moves_up() -> None:
    # The reference img0 scores highest, the target img1 second. With the reference removed the
    # target is 1st (R@1 = 100); had it stayed, R@1 would be 0.
    scores = torch.tensor([_row({"img0": 1.0, "img1": 0.9})])
    m = cirr_metrics(scores, IMGS, ["img0"], ["img1"], [["img0", "img1", "img2", "img3", "img4", "img5"]])
    assert m["recall_at1"] == 100.0
    order, _ = cirr_rankings(scores, IMGS, ["img0"], [["img0", "img1", "img2", "img3", "img4", "img5"]])
    assert order.shape == (1, 7)
    assert index_names(order, IMGS)[0][:2] == ["img1", "img2"]
    assert "img0" not in index_names(order, IMGS)[0]


def test_subset_recall_removes_the_reference_among_group_members() -> None:
    # Group {img0 (ref), img4, img5, img6, img7, img1}; the reference scores highest, the target img4
    # second. Subset ranking without the reference: img4 img5 img6 img7 img1 (5 left) -> Rs@1 = 100.
    group = ["img0", "img4", "img5", "img6", "img7", "img1"]
    scores = torch.tensor([_row({"img0": 1.0, "img4": 0.9, "img5": 0.8, "img6": 0.7, "img7": 0.6, "img1": 0.5})])
    _, subset = cirr_rankings(scores, IMGS, ["img0"], [group])
    assert index_names(subset, IMGS) == [["img4", "img5", "img6", "img7", "img1"]]
    m = cirr_metrics(scores, IMGS, ["img0"], ["img4"], [group])
    assert m["recall_subset_at1"] == 100.0


@pytest.mark.parametrize("k", [1, 5, 10, 50])
def test_target_at_rank_exactly_k(k: int) -> None:
    # 60 images scored 59, 58, ..., 0 in gallery order; the reference img0 (top) is removed, so image
    # i (i >= 1) sits at rank i. Target at rank k counts for R@k but not for the next smaller K;
    # target at rank k + 1 does not count for R@k.
    names = [f"img{i}" for i in range(60)]
    scores = torch.arange(59, -1, -1, dtype=torch.float32).expand(2, -1)
    group = [["img0", f"img{k}", f"img{k + 1}", "img55", "img56", "img57"]] * 2
    m = cirr_metrics(scores, names, ["img0", "img0"], [f"img{k}", f"img{k + 1}"], group)
    ks = [1, 5, 10, 50]
    assert m[f"recall_at{k}"] == 50.0  # the first query only
    for smaller in ks[: ks.index(k)]:
        assert m[f"recall_at{smaller}"] == 0.0
    for larger in ks[ks.index(k) + 1 :]:
        assert m[f"recall_at{larger}"] == 100.0


def test_ties_rank_by_gallery_index() -> None:
    # Scores [1, 3, 3, 2, 3]: the three 3s keep gallery order (1, 2, 4), then 3, then 0.
    assert rank_gallery(torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0]])).tolist() == [[1, 2, 4, 3, 0]]
    # Reference img3 on top; img1 and img2 tie at 0.7. Stable order: img1 before img2.
    scores = torch.tensor([_row({"img3": 0.9, "img1": 0.7, "img2": 0.7, "img0": 0.5})] * 2)
    group = ["img3", "img1", "img2", "img0", "img4", "img5"]
    m = cirr_metrics(scores, IMGS, ["img3", "img3"], ["img2", "img1"], [group, group])
    # Target img2 ties with the earlier img1 -> 2nd (misses R@1, Rs@1); target img1 -> 1st.
    assert m["recall_at1"] == 50.0
    assert m["recall_subset_at1"] == 50.0
    assert m["recall_subset_at2"] == 100.0


def test_ties_stay_in_gallery_order_on_long_rows() -> None:
    # All scores equal on a long row (where an unstable sort would be free to reorder them).
    scores = torch.zeros(3, 5000)
    assert torch.equal(rank_gallery(scores), torch.arange(5000).expand(3, -1))
    assert torch.equal(
        rank_gallery(scores, exclude=torch.tensor([0, 7, 4999]))[1, :8], torch.tensor([0, 1, 2, 3, 4, 5, 6, 8])
    )


def test_rankings_match_a_brute_force_oracle() -> None:
    # Integer scores force many ties; the oracle sorts by (-score, gallery index) in plain Python.
    gen = torch.Generator().manual_seed(0)
    n_queries, n = 30, 40
    names = [f"dev-{i}-0-img0" for i in range(n)]
    scores = torch.randint(0, 6, (n_queries, n), generator=gen).float()
    refs, groups = [], []
    for _ in range(n_queries):
        pick = torch.randperm(n, generator=gen)[:6].tolist()
        refs.append(names[pick[0]])
        groups.append([names[i] for i in pick])
    order, subset = cirr_rankings(scores, names, refs, groups)
    for q in range(n_queries):
        expected = sorted(range(n), key=lambda j, q=q: (-scores[q, j].item(), j))
        expected = [names[j] for j in expected if names[j] != refs[q]]
        assert index_names(order[q : q + 1], names)[0] == expected
        assert index_names(subset[q : q + 1], names)[0] == [x for x in expected if x in groups[q]]


def test_target_absent_from_gallery_names_it() -> None:
    scores = torch.zeros(2, 8)
    group = ["img0", "img1", "img2", "img3", "img4", "img5"]
    with pytest.raises(ValueError, match=r"query 1 \(reference 'img0'\): target 'img99' is not in the gallery"):
        cirr_metrics(scores, IMGS, ["img0", "img0"], ["img1", "img99"], [group, group])
    with pytest.raises(ValueError, match=r"target 'img99' is not in the gallery"):
        fashioniq_metrics(scores, IMGS, ["img1", "img99"])


@pytest.mark.parametrize(
    ("refs", "targets", "groups", "match"),
    [
        (["gone"], ["img1"], [["img1", "img2", "img3", "img4", "img5"]], "reference 'gone' is not in the gallery"),
        (["img0"], ["img1"], [["img0", "img1", "img2", "img3", "img4", "x"]], "group member 'x' not in the gallery"),
        (["img0"], ["img7"], [["img0", "img1", "img2", "img3", "img4", "img5"]], "'img7' is not a member"),
        (["img0"], ["img0"], [["img0", "img1", "img2", "img3", "img4", "img5"]], "its own reference"),
    ],
)
def test_bad_queries_raise(refs: list[str], targets: list[str], groups: list[list[str]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cirr_metrics(torch.zeros(1, 8), IMGS, refs, targets, groups)


def test_bad_inputs_raise() -> None:
    group = [["img0", "img1", "img2", "img3", "img4", "img5"]]
    with pytest.raises(ValueError, match="appears twice"):
        cirr_metrics(torch.zeros(1, 8), IMGS[:7] + ["img0"], ["img0"], ["img1"], group)
    with pytest.raises(ValueError, match="NaN"):
        cirr_metrics(torch.full((1, 8), math.nan), IMGS, ["img0"], ["img1"], group)
    with pytest.raises(ValueError, match="shape"):
        cirr_metrics(torch.zeros(1, 7), IMGS, ["img0"], ["img1"], group)
    with pytest.raises(ValueError, match="same size"):
        cirr_rankings(torch.zeros(2, 8), IMGS, ["img0", "img0"], group + [["img0", "img1", "img2"]])


def test_fashioniq_keeps_the_reference() -> None:
    # 12 images scored 11, 10, ..., 0 in gallery order. Query 0: reference f0 on top, target f10 is
    # 11th in the ranking. FashionIQ does not remove the reference, so it misses R@10 (CIRR's rule
    # would have moved it to 10th). Query 1: target f0 is 1st. R@10 = 1/2, R@50 = 2/2.
    names = [f"f{i}" for i in range(12)]
    scores = torch.arange(11, -1, -1, dtype=torch.float32).expand(2, -1)
    assert fashioniq_metrics(scores, names, ["f10", "f0"]) == {"recall_at10": 50.0, "recall_at50": 100.0}


def test_fashioniq_summary_averages() -> None:
    per_category = {
        "dress": {"recall_at10": 20.0, "recall_at50": 40.0},
        "shirt": {"recall_at10": 30.0, "recall_at50": 60.0},
        "toptee": {"recall_at10": 40.0, "recall_at50": 80.0},
    }
    s = fashioniq_summary(per_category)
    # Means over categories: R@10 (20+30+40)/3 = 30, R@50 (40+60+80)/3 = 60; average (30+60)/2 = 45.
    assert s == {
        "dress_recall_at10": 20.0,
        "dress_recall_at50": 40.0,
        "shirt_recall_at10": 30.0,
        "shirt_recall_at50": 60.0,
        "toptee_recall_at10": 40.0,
        "toptee_recall_at50": 80.0,
        "average_recall_at10": 30.0,
        "average_recall_at50": 60.0,
        "average": 45.0,
    }
    assert s[KEEP_BEST_KEY["FashionIQ"]] == 45.0
    with pytest.raises(ValueError, match="no recall_at50"):
        fashioniq_summary({"dress": {"recall_at10": 1.0}})
    with pytest.raises(ValueError, match="no FashionIQ categories"):
        fashioniq_summary({})


def test_chance_levels_by_hand() -> None:
    # CIRR, 11 images: 10 candidates once the reference is gone. R@K = K/10 capped at 100%;
    # Rs@K = K/5. Arithmetic mean (10+50+100+100+20+40+60)/7; mean_r5_rs1 (50+20)/2.
    c = chance_levels("CIRR", 11)
    assert c["recall_at1"] == pytest.approx(10.0)
    assert c["recall_at5"] == pytest.approx(50.0)
    assert c["recall_at10"] == pytest.approx(100.0)
    assert c["recall_at50"] == pytest.approx(100.0)
    assert [c[f"recall_subset_at{k}"] for k in (1, 2, 3)] == pytest.approx([20.0, 40.0, 60.0])
    assert c["mean_r5_rs1"] == pytest.approx(35.0)
    assert c["arithmetic_mean"] == pytest.approx(380.0 / 7)
    # FashionIQ, 200 images, reference kept: R@10 = 10/200, R@50 = 50/200.
    assert chance_levels("FashionIQ", 200) == pytest.approx({"recall_at10": 5.0, "recall_at50": 25.0})
    with pytest.raises(ValueError, match="CIRR"):
        chance_levels("coco", 10)  # type: ignore[arg-type]


def test_chance_levels_match_random_rankings() -> None:
    # Random scores over many queries, 21 images: CIRR R@5 should be 5/20 = 25% (not 5/21 = 23.8%,
    # about 4 standard errors away with 20000 queries); FashionIQ R@10 10/21 = 47.6%.
    gen = torch.Generator().manual_seed(1)
    n_queries, n = 20000, 21
    names = [f"img{i}" for i in range(n)]
    scores = torch.rand(n_queries, n, generator=gen)
    refs = [names[0]] * n_queries
    targets = [names[1 + q % 5] for q in range(n_queries)]
    groups = [names[:6]] * n_queries
    m = cirr_metrics(scores, names, refs, targets, groups)
    c = chance_levels("CIRR", n)
    for key in ("recall_at1", "recall_at5", "recall_at10", "recall_subset_at1", "recall_subset_at2"):
        assert m[key] == pytest.approx(c[key], abs=0.6), key
    f = fashioniq_metrics(scores, names, targets)
    assert f["recall_at10"] == pytest.approx(chance_levels("FashionIQ", n)["recall_at10"], abs=0.8)
