"""A stand-in accelerator for CPU-only machines: device ``fakegpu`` behaves like a CUDA device for the
bugs a CPU run cannot show, so the GPU path is guarded where no GPU is at hand.

Its tensors live on their own device (computed by the CPU underneath), so, as on CUDA:

- an op mixing a ``fakegpu`` tensor with a CPU tensor (other than a 0-dim scalar) raises the device
  mismatch error (``Expected all tensors to be on the same device``);
- a random op given a CPU generator for a ``fakegpu`` tensor raises;
- every read by the host (``.item()``, ``float(t)``, ``bool(t)``, ``.cpu()``, ``.tolist()``, and ops whose
  output size depends on the data: ``nonzero``, ``unique``, ``masked_select``) is counted in ``READS``,
  so a test can bound the host synchronisations of a loop.

It uses PyTorch's Python backend for the PrivateUse1 dispatch key
(``torch.utils.backend_registration._setup_privateuseone_for_python_backend``), experimental in torch;
``available()`` is False where it is missing and the tests using it skip.
"""
from __future__ import annotations

from typing import List

import torch
from torch.utils._python_dispatch import return_and_correct_aliasing
from torch.utils._pytree import tree_flatten, tree_map

NAME = "fakegpu"
READS: List[str] = []  # host reads since the last reset(), by op name
# ops whose result the host must wait for: a value, or a shape that depends on the values
_HOST_VALUE = {"aten._local_scalar_dense.default", "aten.equal.default", "aten.is_nonzero.default"}
_HOST_SHAPE = ("aten.nonzero", "aten.unique", "aten._unique", "aten.masked_select", "aten.nonzero_static")
# ops that may take CPU index tensors on CUDA (an implicit copy to the device, which we count)
_CPU_INDICES = ("aten.index.Tensor", "aten.index_put_.default", "aten._index_put_impl_.default",
                "aten.index_put.default")
_installed = False


def available() -> bool:
    from torch.utils import backend_registration

    return hasattr(backend_registration, "_setup_privateuseone_for_python_backend") and \
        hasattr(torch.library.Library, "fallback")


def install() -> torch.device:
    """Register the ``fakegpu`` device once per process; returns it."""
    global _installed
    if not _installed:
        from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

        _setup_privateuseone_for_python_backend(NAME)
        # as CUDA's: the current accelerator's autocast state is what torch.utils.checkpoint records
        getattr(torch, NAME).get_amp_supported_dtype = lambda: [torch.float16, torch.bfloat16]
        _LIB.fallback(_dispatch, "PrivateUse1")
        _installed = True
    return torch.device(NAME, 0)


def reset() -> None:
    READS.clear()


class FakeGpuTensor(torch.Tensor):
    """A ``fakegpu`` tensor: device metadata on the outside, a CPU tensor (``cpu``) inside."""

    @staticmethod
    def __new__(cls, data: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, data.shape, strides=data.stride(), dtype=data.dtype,
                                                   device=torch.device(NAME, 0), storage_offset=data.storage_offset(),
                                                   requires_grad=False)

    def __init__(self, data: torch.Tensor) -> None:
        self.cpu_data = data

    def __repr__(self) -> str:
        return f"FakeGpuTensor({self.cpu_data})"

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, *args, **(kwargs or {}))


def _inner(x):
    if isinstance(x, FakeGpuTensor):
        return x.cpu_data
    if isinstance(x, torch.device) and x.type == NAME:
        return torch.device("cpu")
    return x


def _outer(x):
    return FakeGpuTensor(x) if isinstance(x, torch.Tensor) and not isinstance(x, FakeGpuTensor) else x


def _dispatch(func, *args, **kwargs):
    name = str(func)
    flat = tree_flatten((args, kwargs))[0]
    on_device = any(isinstance(t, FakeGpuTensor) for t in flat)
    on_host = [t for t in flat if isinstance(t, torch.Tensor) and not isinstance(t, FakeGpuTensor) and t.dim() > 0]
    if on_device and on_host and name not in ("aten.copy_.default", "aten._to_copy.default"):
        if name not in _CPU_INDICES:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                               f"{NAME}:0 and cpu! ({name})")
        READS.append(f"{name} with CPU indices")
    gen = kwargs.get("generator")
    if gen is not None and gen.device.type != NAME:
        raise RuntimeError(f"Expected a '{NAME}' device type for generator but found '{gen.device.type}' ({name})")
    out = func(*tree_map(_inner, args), **tree_map(_inner, kwargs))
    to_host = name == "aten._to_copy.default" and on_device and kwargs.get("device") is not None and \
        torch.device(kwargs["device"]).type == "cpu"
    if name in _HOST_VALUE or to_host:
        READS.append(name)
        return out
    if on_device and name.startswith(_HOST_SHAPE):
        READS.append(name)
    # in-place ops return their input, and in-place view ops (squeeze_) update its outside's shape
    return return_and_correct_aliasing(func, args, kwargs, tree_map(_outer, out))


_LIB = torch.library.Library("_", "IMPL")
