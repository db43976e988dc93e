"""Weights by content: a file's or a model folder's SHA-256, so that a moved copy counts as the same weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = {".json", ".safetensors", ".bin", ".pt", ".pth"}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(source: str | Path) -> dict[str, str]:
    """The SHA-256 of a weights file, or of a model folder's config and weight files; a hub id by its name."""
    path = Path(source)
    if path.is_file():
        return {"sha256": sha256(path)}
    if not path.is_dir():
        return {"hub": str(source)}
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                       and p.name not in TOKENIZER_FILES):
        digest.update(f"{file.relative_to(path)}\0{sha256(file)}\0".encode())
    return {"sha256": digest.hexdigest()}
