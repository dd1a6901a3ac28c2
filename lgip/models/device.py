"""Which device a run computes on. Resolving `auto` asks torch, whose import costs
seconds; where the machine has no GPU driver at all the answer is certain without it
(`cpu`), so a run that finds everything in its cache never imports torch.
"""
from __future__ import annotations

import ctypes
import os
import sys

from lgip.io import InputError

# The driver library torch's CUDA runtime loads; without it torch sees no CUDA device.
CUDA_DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
ROCM_DEVICE = "/dev/kfd"  # torch's ROCm builds report AMD GPUs through torch.cuda


def certainly_no_gpu() -> bool:
    """True where torch cannot find a CUDA, ROCm or MPS device here whatever its build:
    no CUDA driver to load, no ROCm device node, not macOS. False means: ask torch."""
    if sys.platform == "darwin" or os.path.exists(ROCM_DEVICE):
        return False
    try:
        ctypes.CDLL(CUDA_DRIVER_LIBRARY)
    except OSError:
        return True
    return False


def resolve_device(name: str) -> str:
    """`auto` becomes cuda, then mps, then cpu, whichever is there; others are checked.
    torch is imported only where the answer depends on it."""
    if name == "cpu" or (name == "auto" and certainly_no_gpu()):
        return "cpu"
    import torch

    mps = getattr(torch.backends, "mps", None)
    mps_available = mps is not None and mps.is_available()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_available else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    if name == "mps" and not mps_available:
        raise InputError("--device mps: MPS is not available on this machine")
    if not (name in ("mps", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise InputError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return name
