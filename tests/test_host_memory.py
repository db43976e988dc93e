"""A finished run hands its freed host memory back: glibc would keep it in its heap, resident, run after run."""

from __future__ import annotations

import sys

import pytest
import torch

from sprc_lib.env import return_host_memory


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_freed_heap_blocks_go_back_to_the_system():
    blocks = [torch.ones(16 * 1024) for _ in range(8 * 1024)]  # 64 KB each: glibc's heap, not mmap
    pinned = torch.ones(16 * 1024)  # allocated last: the heap cannot shrink from its top
    del blocks
    before = resident_mb()
    return_host_memory()
    assert before - resident_mb() > 256, "the 512 MB freed stayed resident"
    del pinned
