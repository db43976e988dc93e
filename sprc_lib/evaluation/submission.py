"""CIRR test-server files (format rc2): build them from scores, check them, write them safely.

CIRR's test labels are hidden; the evaluation server scores two uploaded JSON files, one per metric:

    {"version": "rc2", "metric": "recall", "<pairid>": [50 image names, best first], ...}
    {"version": "rc2", "metric": "recall_subset", "<pairid>": [3 group members, best first], ...}

with every test pair id present and each query's reference image left out of its own lists.
A rejected upload costs a round trip (and the server limits submissions), so everything the
server would refuse is caught here, before anything is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from sprc_lib.errors import UserError
from sprc_lib.evaluation.metrics import cirr_rankings, index_names
from sprc_lib.files import write_atomic

VERSION = "rc2"
RECALL_TOP = 50
SUBSET_TOP = 3
# The server accepts files up to 5 MB; decimal megabytes is the stricter reading of that limit.
MAX_SUBMISSION_BYTES = 5_000_000


def cirr_submission(
    scores: Tensor,
    gallery_names: list[str],
    pair_ids: list[int],
    reference_names: list[str],
    group_members: list[list[str]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two submission dicts `(recall, recall_subset)` for test queries scored against the test gallery.

    Rankings come from `sprc_lib.evaluation.metrics.cirr_rankings` (reference removed, stable tie rule), so the
    files rank exactly as the validation metrics do.
    """
    if len(pair_ids) != len(reference_names):
        raise ValueError(f"{len(pair_ids)} pair ids for {len(reference_names)} queries")
    if len(gallery_names) - 1 < RECALL_TOP:
        raise ValueError(
            f"the gallery has {len(gallery_names)} images: {RECALL_TOP} names besides the reference "
            f"need at least {RECALL_TOP + 1}"
        )
    order, subset_order = cirr_rankings(scores, gallery_names, reference_names, group_members)
    if subset_order.shape[1] < SUBSET_TOP:
        raise ValueError(
            f"groups have {subset_order.shape[1]} members besides the reference; "
            f"the subset list needs {SUBSET_TOP}"
        )
    recall: dict[str, Any] = {"version": VERSION, "metric": "recall"}
    recall_subset: dict[str, Any] = {"version": VERSION, "metric": "recall_subset"}
    top = index_names(order[:, :RECALL_TOP], gallery_names)
    top_subset = index_names(subset_order[:, :SUBSET_TOP], gallery_names)
    for pair_id, names, subset in zip(pair_ids, top, top_subset, strict=True):
        key = str(int(pair_id))
        if key in recall:
            raise ValueError(f"pair id {key} appears twice")
        recall[key] = names
        recall_subset[key] = subset
    return recall, recall_subset


def _check_header(submission: dict[str, Any], metric: str) -> None:
    for field, expected in (("version", VERSION), ("metric", metric)):
        if submission.get(field) != expected:
            raise ValueError(
                f"{metric} submission: {field} must be {expected!r}, got {submission.get(field)!r}"
            )


def _check_pair_ids(submission: dict[str, Any], metric: str, expected: set[str]) -> None:
    present = set(submission) - {"version", "metric"}
    missing = sorted(expected - present, key=int)
    if missing:
        raise ValueError(f"{metric} submission: {len(missing)} pair id(s) missing, e.g. pair id {missing[0]}")
    extra = sorted(present - expected)
    if extra:
        raise ValueError(f"{metric} submission: {len(extra)} unexpected pair id(s), e.g. {extra[0]!r}")


def _check_names(
    metric: str, pair_id: str, names: Any, length: int, allowed: set[str], allowed_what: str, reference: str
) -> None:
    where = f"{metric} submission, pair id {pair_id}"
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: expected a list of image names, got {type(names).__name__}")
    if len(names) != length:
        raise ValueError(f"{where}: expected {length} names, got {len(names)}")
    if len(set(names)) != length:
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"{where}: name {duplicate!r} appears more than once")
    if reference in names:
        raise ValueError(f"{where}: contains its own reference image {reference!r}")
    outside = [n for n in names if n not in allowed]
    if outside:
        raise ValueError(f"{where}: name {outside[0]!r} is not {allowed_what}")


def validate_cirr_submission(
    recall: dict[str, Any],
    recall_subset: dict[str, Any],
    pair_ids: list[int],
    gallery_names: list[str],
    reference_names: list[str],
    group_members: list[list[str]],
) -> None:
    """Raise ValueError, naming the pair id and the problem, unless the server would accept both files.

    Checks: version and metric fields; exactly the test pair ids; per pair 50 (resp. 3) distinct
    names from the test gallery (resp. the pair's group), none of them the pair's reference.
    """
    if not len(pair_ids) == len(reference_names) == len(group_members):
        raise ValueError(
            f"{len(pair_ids)} pair ids, {len(reference_names)} references and {len(group_members)} groups"
        )
    expected = {str(int(p)) for p in pair_ids}
    if len(expected) != len(pair_ids):
        raise ValueError("the test pair ids contain duplicates")
    gallery = set(gallery_names)
    for submission, metric in ((recall, "recall"), (recall_subset, "recall_subset")):
        _check_header(submission, metric)
        _check_pair_ids(submission, metric, expected)
    for pair_id, reference, members in zip(pair_ids, reference_names, group_members, strict=True):
        key = str(int(pair_id))
        _check_names("recall", key, recall[key], RECALL_TOP, gallery, "in the test gallery", reference)
        group = set(members)
        _check_names("recall_subset", key, recall_subset[key], SUBSET_TOP, group, "in its group", reference)


def check_output_dir(out_dir: str | Path) -> None:
    """The submission's folder is a folder that can be written (or made), checked before any scoring."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"`output_dir` {out_dir}: that is a file, not a folder; choose a folder for the submission")
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"`output_dir` {out_dir}: {existing} cannot be written; choose another folder")


def write_cirr_submission(
    out_dir: Path,
    name: str,
    recall: dict[str, Any],
    recall_subset: dict[str, Any],
    *,
    pair_ids: list[int],
    gallery_names: list[str],
    reference_names: list[str],
    group_members: list[list[str]],
) -> tuple[Path, Path]:
    """Validate, then write `recall_submission_<name>.json` and `recall_subset_submission_<name>.json`.

    Nothing is written (not even `out_dir`) unless both files pass validation and fit the server's
    size limit; each file is written atomically. Returns the two paths.
    """
    if not name or Path(name).name != name:
        raise ValueError(f"submission name {name!r} must be a plain file-name part (no folders)")
    validate_cirr_submission(recall, recall_subset, pair_ids, gallery_names, reference_names, group_members)
    files = {
        Path(out_dir) / f"recall_submission_{name}.json": recall,
        Path(out_dir) / f"recall_subset_submission_{name}.json": recall_subset,
    }
    # Compact separators: the full test split's recall file comes close enough to the limit for json's default
    # spacing to matter.
    payloads = {
        path: json.dumps(sub, sort_keys=True, separators=(",", ":")).encode() for path, sub in files.items()
    }
    for path, data in payloads.items():
        if len(data) > MAX_SUBMISSION_BYTES:
            raise ValueError(
                f"{path.name} would be {len(data):,} bytes, "
                f"over the server's limit of {MAX_SUBMISSION_BYTES:,}"
            )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for path, data in payloads.items():
        write_atomic(path, data)
    recall_path, subset_path = payloads
    return recall_path, subset_path
