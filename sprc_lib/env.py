"""The machine we run on: device, numeric precision, and a report a student can read."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterator

import torch

from sprc_lib.errors import UserError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def on_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` takes the GPU when there is one; a device that does not exist here is a UserError naming it."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"`device` {name}: not a device name; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"`device` {name}: no CUDA GPU is visible here; use `device` cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"`device` {name}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"`device` {name}: the course runs on cpu or cuda (or mps); use one of them")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision name, or None for plain fp32.

    `auto`: bf16 on GPUs that have it (A100, H100), else fp16 with a grad scaler (T4, V100) as the
    reference does; fp32 on a CPU, where half precision is slow and gains nothing.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {PRECISIONS}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision where `dtype` is set; a no-op context otherwise."""
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def return_host_memory() -> None:
    """Hand freed host memory back to the operating system. glibc keeps the freed blocks of a finished run (the
    optimiser's moments, the gradients) in its heap: at the real size, gigabytes stayed resident after a
    one-step run and its model were freed, and a notebook that trains run after run grew by as much each
    time. A no-op on a libc without `malloc_trim`."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # another libc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 1 << 20  # any process: a weight, a gradient, an AdamW moment of a real-size model
LARGE_MODEL_THRESHOLD = 128 << 10  # once a model of the real size is loaded: its activations too
LARGE_MODEL = 100_000_000  # parameters; the tiny track's models are far below, BLIP-2 ViT-g far above
_threshold = 0  # the threshold set in this process (0: glibc's own, dynamic)


def map_large_blocks(parameters: int = 0) -> None:
    """Serve each host allocation above a threshold from a memory map of its own, which goes back to the
    system the moment it is freed. glibc raises its own threshold after freeing a large block (up to
    32 MiB) and then serves such tensors from its heap, where the gaps they leave stay resident, so a
    training step's peak grew from step to step. The threshold is 1 MiB in any process, and 128 KiB
    once a model of more than `LARGE_MODEL` parameters is loaded (`parameters`), whose activations then
    leave as well; a small model's steps keep glibc's heap, which the many mappings would slow. A
    threshold only ever goes down. A no-op on a libc without `mallopt`."""
    global _threshold
    wanted = LARGE_MODEL_THRESHOLD if parameters > LARGE_MODEL else MMAP_THRESHOLD
    if _threshold and _threshold <= wanted:
        return
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # another libc (musl)
            ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, wanted)
            _threshold = wanted


@contextlib.contextmanager
def host_memory_returned() -> Iterator[None]:
    """`map_large_blocks`, and `return_host_memory` before and after the block (a training run)."""
    map_large_blocks()
    return_host_memory()
    try:
        yield
    finally:
        return_host_memory()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> dict[str, str]:
    """Versions, device, GPU name and memory, Colab or not: what notebook 00 prints."""
    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "transformers": _version("transformers"),
        "platform": platform.platform(terse=True),
        "cpu cores": str(os.cpu_count()),
        "colab": "yes" if on_colab() else "no",
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report["device"] = f"cuda ({torch.cuda.device_count()} GPU)"
        report["gpu"] = props.name
        report["gpu memory"] = f"{props.total_memory / 2**30:.1f} GiB"
        report["bf16"] = "yes" if torch.cuda.is_bf16_supported() else "no"
    else:
        report["device"] = "cpu"
    return report
