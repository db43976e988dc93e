"""Frozen-ViT feature cache: run the ViT once per image, then train and index from disk.

The ViT is frozen and the authors' image transform is deterministic, so the ViT's output for an
image never changes during training. At paper scale that forward (ViT-g on two images per triplet)
is most of the cost of a step. The cache stores the tokens *before* the trainable `ln_vision`.

Layout of one cache (one folder per backbone + transform + dtype, so a stale cache is never read):

    <root>/<key>/meta.json              what the key was computed from, for a person to read
    <root>/<key>/chunk_<id>.npy         (rows, T, Dv) tokens, memory-mapped when read
    <root>/<key>/chunk_<id>.json        its own index: [image path, file size, file mtime_ns] per row

Any number of processes may fill and read one cache at once (two trainings, torchrun's ranks, a
notebook beside a command): nothing is shared that two of them write. Each writer gives its chunks
names no other writer uses, writes a chunk whole (temporary file, then rename) and only then its
index, and every reader merges the indexes of all chunks, the newest entry of an image winning. An
interrupted build resumes where it stopped. Every chunk is checked before it is read (its file
loads, holds one row per index entry of the right shape and dtype): a missing or damaged one is
dropped and its images computed again. An image whose file changed (size or mtime) is computed again.

Before computing, the cache says what the new tokens take on disk (`cache_bytes`: ViT-g's 257 x 1408
fp16 tokens are 0.72 MB an image, 13.9 GB for CIRR's train and val) and refuses when the disk is short.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from sprc_lib.data.base import RetrievalDataset, load_rgb
from sprc_lib.data.workers import CarriesErrors
from sprc_lib.errors import UserError
from sprc_lib.files import atomic_path, shown_path, write_atomic
from sprc_lib.model import SPRCModel
from sprc_lib.model.blip2 import is_vit_name
from sprc_lib.progress import tqdm

_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32}
GB = 10**9


def size_text(n_bytes: int) -> str:
    """GB for a real cache, MiB for a toy one (where GB would print 0.0)."""
    return f"{n_bytes / GB:.1f} GB" if n_bytes >= GB / 10 else f"{n_bytes / 2**20:.1f} MiB"


DISK_MARGIN = GB  # left free beyond the tokens: chunk indexes, and room for the rest of the machine


def cache_bytes(n_images: int, tokens: int, width: int, bytes_per_value: int = 2) -> int:
    """Disk the tokens of `n_images` take (2 bytes a value: fp16), to size a cache before filling it.

    At paper scale (ViT-g at 224 px: 257 tokens of width 1408) CIRR's train and val images (16,939 +
    2,297) take `cache_bytes(19_236, 257, 1408)`, about 13.9 GB.
    """
    return n_images * tokens * width * bytes_per_value


def backbone_fingerprint(model: SPRCModel) -> str:
    """A hash of the frozen ViT's weights (and sizes): a different backbone gets a different cache."""
    digest, read = hashlib.sha256(), model.vit_reader()  # from the file where it can: see `vit_reader`
    for name, tensor in sorted((n, t) for n, t in model.state_dict().items() if is_vit_name(n)):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(read(name).detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _file_stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class FeatureCache:
    """ViT tokens of images, keyed by image file, transform, backbone weights, storage dtype and the dtype
    the ViT computes them in (`compute_dtype`: float64 for the models that score exactly, see
    `evaluation.context`, so that the stored tokens are the same on every CPU)."""

    def __init__(
        self,
        root: str | Path,
        model: SPRCModel,
        transform: Callable[[Image.Image], Tensor],
        dtype: torch.dtype = torch.float16,
        chunk_size: int = 512,
        compute_dtype: torch.dtype = torch.float32,
    ):
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"cache dtype must be one of {list(_NUMPY_DTYPES)}, got {dtype}")
        self.model, self.transform, self.dtype, self.chunk_size = model, transform, dtype, chunk_size
        self.compute_dtype = compute_dtype
        self._vit: SPRCModel | None = None
        embeddings = model.vision_model.embeddings
        self.token_shape = (embeddings.num_positions, model.config.vision_config.hidden_size)
        meta = {"backbone": backbone_fingerprint(model), "transform": repr(transform), "dtype": str(dtype)}
        if compute_dtype != torch.float32:  # float32 caches keep the keys they always had
            meta["compute_dtype"] = str(compute_dtype)
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / key
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / "meta.json", json.dumps(meta))
        except OSError as err:
            raise UserError(f"`feature_cache` {root}: cannot write there ({err.strerror}); pass a folder you can "
                            "write, on local disk") from err
        self.index: dict[str, tuple[str, int, int, int]] = {}  # path -> (chunk, row, file size, mtime_ns)
        self._rows: dict[str, int] = {}  # chunk -> rows its index lists
        self._chunks: dict[str, np.ndarray | None] = {}  # chunk -> its memory map once checked, None if damaged
        self.refresh()

    def __len__(self) -> int:
        return len(self.index)

    def refresh(self) -> None:
        """Merge the indexes of every chunk in the folder (other processes may have added some)."""
        index, rows = {}, {}
        for names_file in sorted(self.dir.glob("chunk_*.json")):  # ids sort by creation time
            chunk = names_file.stem
            try:
                entries = json.loads(names_file.read_text())
            except (OSError, ValueError):
                self._drop(chunk, "its index is unreadable")
                continue
            rows[chunk] = len(entries)
            for row, (path, size, mtime) in enumerate(entries):
                index[path] = (chunk, row, size, mtime)
        self.index, self._rows = index, rows

    def missing(self, paths: Sequence[str | Path]) -> list[Path]:
        """Images not cached yet, cached in a chunk that is missing or damaged, or whose file changed since."""
        out = []
        for p in map(Path, paths):
            entry = self.index.get(str(p.resolve()))
            if entry is None or tuple(entry[2:]) != _file_stamp(p) or self._chunk(entry[0]) is None:
                out.append(p)
        return out

    def ensure(self, paths: Sequence[str | Path], device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        """Compute and store the tokens of every image in `paths` that is missing or stale."""
        self.refresh()
        todo = list(dict.fromkeys(self.missing(paths)))
        if not todo:
            return
        self._check_room(len(dict.fromkeys(map(Path, paths))), len(todo))
        bar = tqdm(total=len(todo), desc="ViT feature cache", unit="img")
        for start in range(0, len(todo), self.chunk_size):
            part = todo[start : start + self.chunk_size]
            rows = [self._vit_tokens(part[i : i + batch_size], device) for i in range(0, len(part), batch_size)]
            array = np.concatenate([r.numpy() for r in rows]).astype(_NUMPY_DTYPES[self.dtype])
            entries = [[str(p.resolve()), *_file_stamp(p)] for p in part]
            chunk = f"chunk_{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            with atomic_path(self.dir / f"{chunk}.npy") as tmp, tmp.open("wb") as f:
                np.save(f, array)
            write_atomic(self.dir / f"{chunk}.json", json.dumps(entries))  # last: a listed chunk is whole
            self._rows[chunk] = len(entries)
            for row, (path, size, mtime) in enumerate(entries):
                self.index[path] = (chunk, row, size, mtime)
            bar.update(len(part))
        bar.close()

    def _check_room(self, n_images: int, n_new: int) -> None:
        """Say what the cache of `n_images` takes; refuse before any ViT pass when the disk cannot hold the new ones."""
        tokens, width = self.token_shape
        itemsize = np.dtype(_NUMPY_DTYPES[self.dtype]).itemsize
        total, need = (cache_bytes(n, tokens, width, itemsize) for n in (n_images, n_new))
        tqdm.write(f"feature cache: {n_images:,} images x {tokens} tokens x {width} x {itemsize} bytes = "
                   f"{size_text(total)} (computing {n_new:,} new, {size_text(need)}) in {shown_path(self.dir)}")
        free = shutil.disk_usage(self.dir).free
        if free < need + DISK_MARGIN:
            raise UserError(
                f"feature cache {self.dir}: the {n_new:,} images to compute need {need / GB:.1f} GB (and "
                f"{DISK_MARGIN / GB:.0f} GB to spare), but only {free / GB:.1f} GB are free there. Free some space, "
                "or point `feature_cache` (the cache folder) at a bigger disk: on Colab its local disk (under "
                "/content), never Google Drive"
            )

    def warm(self, dataset: RetrievalDataset, device: str | torch.device = "cpu") -> None:
        """Cache every image `dataset` opens: its gallery and its triplets' images (those not cached yet)."""
        names = dict.fromkeys(dataset.image_names)
        for triplet in dataset.triplets:
            names.update(dict.fromkeys(dataset.triplet_images(triplet)))
        self.ensure([dataset.image_path(n) for n in names], device=device)

    @torch.no_grad()
    def _vit_tokens(self, paths: Sequence[Path], device: str | torch.device) -> Tensor:
        pixels = torch.stack([self.transform(load_rgb(p)) for p in paths]).to(device, self.compute_dtype)
        if self._vit is None:  # the ViT is frozen: one copy in the compute dtype serves every batch
            same = self.compute_dtype == torch.float32
            self._vit = self.model if same else copy.deepcopy(self.model).to(self.compute_dtype)
        return self._vit.vit(pixels).to("cpu", self.dtype)

    def _chunk(self, chunk: str) -> np.ndarray | None:
        """A chunk's memory map, checked once against its index and the tokens' shape; None if damaged."""
        if chunk not in self._chunks:
            try:
                array = np.load(self.dir / f"{chunk}.npy", mmap_mode="r")
            except (OSError, ValueError):
                array = None
            expected = (self._rows.get(chunk, -1), *self.token_shape)
            if array is not None and (array.shape != expected or array.dtype != _NUMPY_DTYPES[self.dtype]):
                array = None
            self._chunks[chunk] = array
            if array is None:
                self._drop(chunk, "it is missing or damaged")
        return self._chunks[chunk]

    def _drop(self, chunk: str, why: str) -> None:
        """Forget a chunk that cannot be used and remove its files, so its images are computed again."""
        warnings.warn(f"feature cache {self.dir}: {chunk} {why}; its images are computed again", stacklevel=3)
        self._chunks[chunk] = None
        for suffix in (".npy", ".json"):
            (self.dir / f"{chunk}{suffix}").unlink(missing_ok=True)

    def token(self, path: str | Path) -> Tensor:
        """(T, Dv) tokens of one image, in the cache's dtype; the image must be cached."""
        entry = self.index.get(str(Path(path).resolve()))
        if entry is None:
            raise KeyError(f"{path}: not in the feature cache {self.dir}; call ensure() with it first")
        array = self._chunk(entry[0])
        if array is None:
            raise UserError(f"feature cache {self.dir}: {entry[0]}.npy, which holds {path}, went missing or was "
                            "damaged while in use; run again (the cache computes what is missing)")
        return torch.from_numpy(np.array(array[entry[1]]))


class CachedImages(CarriesErrors, Dataset):
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

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        for key, name_key in self._IMAGE_KEYS.items():
            if name_key in item:
                item[key] = self.cache.token(self.dataset.image_path(item[name_key]))
        return item
