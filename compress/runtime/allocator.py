"""Process-level speed settings for training on CPU."""
from __future__ import annotations

import ctypes


def tune_allocator() -> bool:
    """Keep glibc from returning every large freed block to the kernel.

    glibc serves each allocation above its mmap threshold with a fresh mmap, so the logits and
    attention maps of every training step (hundreds of MB) are zero-filled by the kernel page by page
    again on the next step; on a 2-core machine half the CPU time of ML-1M training went there.
    Raising the mmap and trim thresholds lets freed blocks be reused: about 2x faster per step, at a
    higher resident peak. Same effect as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_. Returns False
    (and changes nothing) where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold, big = -1, -3, 2 ** 31 - 1
    return bool(libc.mallopt(m_mmap_threshold, big)) and bool(libc.mallopt(m_trim_threshold, big))
