"""A finished run hands its freed host memory back: glibc would keep it in its heap, resident, run after run."""

from __future__ import annotations

import subprocess
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


FRAGMENTED = """
import sys, torch
from sprc_lib.env import map_large_blocks
if sys.argv[1] == "mapped":
    map_large_blocks()
if sys.argv[1] == "large model":
    map_large_blocks(parameters=200_000_000)
size = int(sys.argv[2])  # floats per block
def resident_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
first = torch.ones(4 << 20)
del first  # 16 MB freed: glibc would now serve blocks up to that size from its heap
blocks = [torch.ones(size) for _ in range((128 << 20) // size)]  # 512 MB
pinned = torch.ones(size)  # above them: the heap cannot shrink past it
before = resident_mb()
del blocks
print(before - resident_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
@pytest.mark.parametrize(("mode", "floats"), [("mapped", 1 << 20), ("large model", 64 << 10)],
                         ids=["4 MB blocks, any process", "256 KB blocks, a real-size model loaded"])
def test_freed_tensors_above_the_threshold_leave_at_once(mode, floats):
    returned = float(subprocess.run([sys.executable, "-c", FRAGMENTED, mode, str(floats)], capture_output=True,
                                    text=True, check=True).stdout)
    assert returned > 400, f"of 512 MB freed, {returned:.0f} MB went back"
