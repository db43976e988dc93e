"""Frozen-ViT feature cache: run the ViT once per image, then train and index from disk.

The ViT is frozen and the reference's image transform is deterministic, so the ViT's output for an
image never changes during training. At paper scale that forward (ViT-g on two images per triplet)
is most of the cost of a step. The cache stores the tokens *before* the trainable `ln_vision`.

Layout of one cache (one folder per backbone + transform + dtype, so a stale cache is never read):

    <root>/<key>/meta.json          what the key was computed from, for a person to read
    <root>/<key>/index.json         image path -> [chunk, row, file size, file mtime_ns]
    <root>/<key>/chunk_00000.npy    (rows, T, Dv) arrays, memory-mapped when read

Chunks are written whole (temporary file, then rename) and the index after each chunk, so an
interrupted build resumes where it stopped. An image whose file changed (size or mtime) is computed
again into a new chunk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from sprc_lib.data.base import RetrievalDataset, load_rgb
from sprc_lib.files import atomic_path, write_atomic
from sprc_lib.model import SPRCModel

_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32}


def backbone_fingerprint(model: SPRCModel) -> str:
    """A hash of the frozen ViT's weights (and sizes): a different backbone gets a different cache."""
    digest = hashlib.sha256()
    for name, tensor in sorted((n, t) for n, t in model.state_dict().items() if _is_vit_key(n)):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _is_vit_key(name: str) -> bool:
    return name.startswith(("vision_model.embeddings.", "vision_model.encoder."))


def _file_stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class FeatureCache:
    """ViT tokens of images, keyed by image file, transform, backbone weights and storage dtype."""

    def __init__(
        self,
        root: str | Path,
        model: SPRCModel,
        transform: Callable[[Image.Image], Tensor],
        dtype: torch.dtype = torch.float16,
        chunk_size: int = 512,
    ):
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"cache dtype must be one of {list(_NUMPY_DTYPES)}, got {dtype}")
        self.model, self.transform, self.dtype, self.chunk_size = model, transform, dtype, chunk_size
        meta = {"backbone": backbone_fingerprint(model), "transform": repr(transform), "dtype": str(dtype)}
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / "meta.json", json.dumps(meta))
        index_file = self.dir / "index.json"
        self.index: dict[str, list[int]] = json.loads(index_file.read_text()) if index_file.exists() else {}
        self._chunks: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    def missing(self, paths: Sequence[str | Path]) -> list[Path]:
        """Images not cached yet, or whose file changed since they were cached."""
        out = []
        for p in map(Path, paths):
            entry = self.index.get(str(p.resolve()))
            if entry is None or tuple(entry[2:]) != _file_stamp(p):
                out.append(p)
        return out

    def ensure(self, paths: Sequence[str | Path], device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        """Compute and store the tokens of every image in `paths` that is missing or stale."""
        todo = list(dict.fromkeys(self.missing(paths)))
        if not todo:
            return
        next_chunk = 1 + max((e[0] for e in self.index.values()), default=-1)
        bar = tqdm(total=len(todo), desc="ViT feature cache", unit="img")
        for start in range(0, len(todo), self.chunk_size):
            part = todo[start : start + self.chunk_size]
            rows = [self._vit_tokens(part[i : i + batch_size], device) for i in range(0, len(part), batch_size)]
            array = np.concatenate([r.numpy() for r in rows]).astype(_NUMPY_DTYPES[self.dtype])
            chunk_file = self.dir / f"chunk_{next_chunk:05d}.npy"
            with atomic_path(chunk_file) as tmp, tmp.open("wb") as f:
                np.save(f, array)
            for row, p in enumerate(part):
                self.index[str(p.resolve())] = [next_chunk, row, *_file_stamp(p)]
            write_atomic(self.dir / "index.json", json.dumps(self.index))
            next_chunk += 1
            bar.update(len(part))
        bar.close()

    def warm(self, dataset: RetrievalDataset, device: str | torch.device = "cpu") -> None:
        """Cache every image `dataset` opens: its gallery and its triplets' images (those not cached yet)."""
        names = dict.fromkeys(dataset.image_names)
        for triplet in dataset.triplets:
            names.update(dict.fromkeys(dataset.triplet_images(triplet)))
        self.ensure([dataset.image_path(n) for n in names], device=device)

    @torch.no_grad()
    def _vit_tokens(self, paths: Sequence[Path], device: str | torch.device) -> Tensor:
        pixels = torch.stack([self.transform(load_rgb(p)) for p in paths]).to(device)
        return self.model.vit(pixels).to("cpu", self.dtype)

    def token(self, path: str | Path) -> Tensor:
        """(T, Dv) tokens of one image, in the cache's dtype; the image must be cached."""
        entry = self.index.get(str(Path(path).resolve()))
        if entry is None:
            raise KeyError(f"{path}: not in the feature cache {self.dir}; call ensure() with it first")
        chunk = self._chunks.get(entry[0])
        if chunk is None:
            chunk = self._chunks[entry[0]] = np.load(self.dir / f"chunk_{entry[0]:05d}.npy", mmap_mode="r")
        return torch.from_numpy(np.array(chunk[entry[1]]))


class CachedImages(Dataset):
    """A names-only dataset whose items get frozen-ViT tokens from the cache where pixels would be.

    Items keep their keys (`reference`, `target`, `image`), so training and indexing code is the
    same with or without the cache; the model tells tokens from pixels by their shape.
    """

    _IMAGE_KEYS = {"image": "name", "reference": "reference_name", "target": "target_name"}

    def __init__(self, dataset: RetrievalDataset, cache: FeatureCache, device: str | torch.device = "cpu"):
        if dataset.preprocess is not None:
            raise ValueError(f"{dataset.name}: build it without `preprocess`; the cache provides the images")
        self.dataset, self.cache = dataset, cache
        self.name = f"{dataset.name} (cached)"
        cache.warm(dataset, device)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        for key, name_key in self._IMAGE_KEYS.items():
            if name_key in item:
                item[key] = self.cache.token(self.dataset.image_path(item[name_key]))
        return item
