"""fisc.malloc: freed memory stays in the process, so a repeated allocation faults no pages."""

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, resource
from fisc.malloc import keep_freed_memory

applied = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def churn():
    for _ in range(20):  # 64 MiB allocated, written and freed, like a step's activations
        a = libc.malloc(64 << 20)
        ctypes.memset(a, 1, 64 << 20)
        libc.free(a)
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(env_value: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={"FISC_KEEP_FREED_MEMORY": env_value, "PATH": ""})  # fmt: skip
    applied, n = out.stdout.split()
    return applied == "True", int(n)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_memory_is_kept_and_the_switch_turns_it_off():
    applied, kept = faults("1")
    assert applied
    off, returned = faults("0")
    assert not off
    pages = 20 * (64 << 20) // 4096  # every page of every allocation, when memory goes back
    assert returned > pages // 2
    assert kept < pages // 100
