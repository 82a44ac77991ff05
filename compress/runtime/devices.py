"""Which device a run uses: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
from __future__ import annotations

import itertools
import os
import re
from typing import Optional, Union

import torch

from compress.errors import ConfigError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError(f"unknown `device` {device!r}; choose auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise ConfigError(f"`device` {device} asked for, but {count} CUDA device(s) are available; "
                              "use `device` cpu, auto, or an index below the count")
    return torch.device(device)


def as_device(device: Union[None, str, torch.device], default: torch.device) -> torch.device:
    """What an API function's ``device`` argument means: None is ``default`` (usually where the model
    already is), a string is what ``--device`` takes ("auto" too, an unknown one a ConfigError), and a
    ``torch.device`` is checked as its string is: torch.device("meta"), ("cuda") without CUDA or ("mps") without
    MPS is the same one-line ConfigError, not a raw error deep inside torch (nor, for load, a model without
    weights). An accelerator no string names (mps, xpu, a registered backend such as the tests' stand-in GPU)
    is taken as it is where torch says it is present: the API has always run on them."""
    if device is None:
        return default
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f"device must be a string like 'cuda:0' or a torch.device, got {type(device).__name__}")
    if isinstance(device, torch.device):
        if device.type not in ("cpu", "cuda") and _present(device):
            return device
        device = "cpu" if device.type == "cpu" else str(device)  # str(torch.device("cpu", 0)) is cpu:0
    return resolve_device(device)


def _present(device: torch.device) -> bool:
    """Whether torch's module for ``device``'s type (torch.mps, torch.xpu, a registered backend's; meta has none)
    says the device is there."""
    backend = getattr(torch, device.type, None)
    if not (hasattr(backend, "is_available") and hasattr(backend, "device_count")):
        return False
    return bool(backend.is_available()) and (device.index or 0) < backend.device_count()


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model`` lives: its first parameter's device, else its first buffer's (a popularity baseline
    keeps its counts in a buffer and has no parameters), else the CPU."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):  # the first one, not a list of all
        return tensor.device
    return torch.device("cpu")


def host_memory_bytes() -> Optional[int]:
    """The machine's physical memory where the system says (None where it does not)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
