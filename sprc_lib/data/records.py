"""Read and validate the annotation files into typed records, failing early with a useful message.

A bad record is reported with its file, index, id and field, because "KeyError: 'img_set'" twenty
minutes into an epoch tells nobody which of 28,225 records to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from sprc_lib.data.errors import DataError
from sprc_lib.data.schema import CIRR_SET_SIZE, CIRR_SPLITS_WITH_TARGETS, FASHIONIQ_SPLITS_WITH_TARGETS

_FIX_HINT = "fix or remove that record, or re-download the annotations (see data/README.md)"


@dataclass(frozen=True)
class CIRRTriplet:
    """One CIRR query: reference + caption -> target, with its 6-image set. Targets are None in test1."""

    pair_id: int
    reference: str
    caption: str
    set_id: int
    members: tuple[str, ...]
    reference_rank: int
    target: str | None = None
    target_soft: dict[str, float] | None = None
    target_rank: int | None = None


@dataclass(frozen=True)
class FashionIQTriplet:
    """One FashionIQ query: candidate (reference) + two captions -> target (None in test)."""

    reference: str
    captions: tuple[str, str]
    dress_type: str
    target: str | None = None


def read_json(path: Path, what: str) -> Any:
    """Load one annotation file; a missing or unparsable file becomes a DataError that names it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{what} not found: {path}. Check that `data_path` points at the folder that contains "
            f"cirr_dataset/ and fashionIQ_dataset/ (see data/README.md), or generate toy data with "
            f"`python -m sprc_lib toy-data`."
        )
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); re-download or regenerate it.") from err
    except OSError as err:  # permission denied, an I/O error
        raise DataError(f"cannot read {what} {path} ({err.strerror or err}); give your user read access to it "
                        f"(e.g. `chmod u+r {path}`), or copy the dataset again.") from err


class _Record:
    """Typed field access on one raw record, raising DataError that names file, record and field."""

    def __init__(self, path: Path, index: int, raw: Any, id_key: str) -> None:
        self.path, self.index, self.raw = path, index, raw
        label = raw.get(id_key) if isinstance(raw, dict) else None
        self.label = f"record {index}" + (f" ({id_key} {label!r})" if label is not None else "")
        if not isinstance(raw, dict):
            self.fail("", f"must be a JSON object, got {type(raw).__name__}")

    def fail(self, field: str, problem: str) -> NoReturn:
        where = f"field {field!r} " if field else ""
        raise DataError(f"{self.path}: {self.label}: {where}{problem}; {_FIX_HINT}.")

    def get(self, field: str, kind: type, container: dict | None = None) -> Any:
        source = self.raw if container is None else container
        if field not in source:
            self.fail(field, "is missing")
        value = source[field]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is str:
            ok = ok and value != ""
        if not ok:
            want = "a non-empty string" if kind is str else kind.__name__
            self.fail(field, f"must be {want}, got {value!r}")
        return value

    def names(self, field: str, value: Any, length: int) -> tuple[str, ...]:
        if not isinstance(value, list) or len(value) != length:
            got = f"{len(value)} items" if isinstance(value, list) else repr(value)
            self.fail(field, f"must be a list of {length} image names, got {got}")
        if not all(isinstance(v, str) and v for v in value):
            self.fail(field, f"must hold non-empty strings, got {value!r}")
        return tuple(value)


def load_cirr_split(path: Path) -> dict[str, str]:
    """`split.rc2.<split>.json`: image name -> path relative to `cirr_dataset/`."""
    raw = read_json(path, "CIRR image split file")
    if not isinstance(raw, dict):
        raise DataError(f"{path}: must map image names to relative paths, got a {type(raw).__name__}.")
    for name, rel in raw.items():
        if not (isinstance(rel, str) and rel):
            raise DataError(f"{path}: entry {name!r} must be a relative image path, got {rel!r}.")
    return raw


def load_cirr_triplets(path: Path, split: str, gallery: dict[str, str]) -> list[CIRRTriplet]:
    """`cap.rc2.<split>.json`, validated; every name a triplet uses must be in the split's gallery."""
    raw = read_json(path, "CIRR caption file")
    if not isinstance(raw, list):
        raise DataError(f"{path}: must be a list of records, got a {type(raw).__name__}.")
    has_targets = split in CIRR_SPLITS_WITH_TARGETS
    triplets = []
    first_record: dict[int, int] = {}  # pair id -> the record that has it (the test server keys on pair ids)
    for index, item in enumerate(raw):
        rec = _Record(path, index, item, "pairid")
        pair_id = rec.get("pairid", int)
        if pair_id in first_record:
            rec.fail("pairid", f"repeats the pair id of record {first_record[pair_id]}")
        first_record[pair_id] = index
        img_set = rec.get("img_set", dict)
        members = rec.names("img_set.members", rec.get("members", list, img_set), CIRR_SET_SIZE)
        fields: dict[str, Any] = dict(
            pair_id=pair_id,
            reference=rec.get("reference", str),
            caption=rec.get("caption", str),
            set_id=rec.get("id", int, img_set),
            members=members,
            reference_rank=rec.get("reference_rank", int, img_set),
        )
        if has_targets:
            fields["target"] = rec.get("target_hard", str)
            fields["target_soft"] = _soft_labels(rec)
            fields["target_rank"] = rec.get("target_rank", int, img_set)
        for field, name in (("reference", fields["reference"]), ("target_hard", fields.get("target"))):
            if name is not None and name not in gallery:
                rec.fail(field, f"names {name!r}, which is not in this split's image split file")
        if fields["reference"] not in members:
            rec.fail("img_set.members", f"must contain the reference {fields['reference']!r}")
        if split == "val" and fields["target"] not in members:
            rec.fail("img_set.members", f"must contain the target {fields['target']!r}")
        triplets.append(CIRRTriplet(**fields))
    return triplets


def _soft_labels(rec: _Record) -> dict[str, float]:
    soft = rec.get("target_soft", dict)
    for name, score in soft.items():
        if not isinstance(score, int | float) or isinstance(score, bool):
            rec.fail("target_soft", f"must map image names to numbers, got {name!r}: {score!r}")
    return {name: float(score) for name, score in soft.items()}


def load_fashioniq_split(path: Path) -> list[str]:
    """`split.<category>.<split>.json`: a plain list of ASINs."""
    raw = read_json(path, "FashionIQ image split file")
    if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
        raise DataError(f"{path}: must be a list of image names (ASINs).")
    return raw


def load_fashioniq_triplets(path: Path, split: str, category: str,
                            gallery: set[str] | None = None) -> list[FashionIQTriplet]:
    """`cap.<category>.<split>.json`, validated: a candidate, exactly 2 captions, a target unless test.

    With `gallery` (the category's split file, for val and test), the candidate and the target must be
    in it: the protocol ranks that gallery and looks the candidate up in it.
    """
    raw = read_json(path, "FashionIQ caption file")
    if not isinstance(raw, list):
        raise DataError(f"{path}: must be a list of records, got a {type(raw).__name__}.")
    has_targets = split in FASHIONIQ_SPLITS_WITH_TARGETS
    triplets = []
    for index, item in enumerate(raw):
        rec = _Record(path, index, item, "candidate")
        captions = rec.get("captions", list)
        if len(captions) != 2 or not all(isinstance(c, str) for c in captions):
            rec.fail("captions", f"must be a list of exactly 2 strings, got {captions!r}")
        triplet = FashionIQTriplet(
            reference=rec.get("candidate", str),
            captions=(captions[0], captions[1]),
            dress_type=category,
            target=rec.get("target", str) if has_targets else None,
        )
        for field, name in (("candidate", triplet.reference), ("target", triplet.target)):
            if gallery is not None and name is not None and name not in gallery:
                rec.fail(field, f"names {name!r}, which is not in split.{category}.{split}.json: the {split} "
                                "protocol ranks that gallery, so this query cannot be scored")
        triplets.append(triplet)
    return triplets
