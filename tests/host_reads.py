"""A guard that fails on any read of a tensor value back to the host: on a GPU each such read
is a wait for the device (and is refused under CUDA graph capture). On CPU the same ops still
pass through torch's dispatcher, so CPU tests can prove a code path free of them."""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops that copy a device value to the host (each a wait for the GPU, and forbidden in capture),
# or whose output shape depends on tensor values.
HOST_READS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique")


class NoHostReads(TorchDispatchMode):
    """Fails on any op that reads a tensor value back to the host."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if any(name == bad for bad in HOST_READS):
            raise AssertionError(f"{name} inside guarded code: a host read")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_host_reads():
    """NoHostReads, plus the host copies that bypass dispatch (tolist, numpy)."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("tolist()/numpy() inside guarded code: a host read")

    saved = torch.Tensor.tolist, torch.Tensor.numpy
    torch.Tensor.tolist = torch.Tensor.numpy = refuse
    try:
        with NoHostReads():
            yield
    finally:
        torch.Tensor.tolist, torch.Tensor.numpy = saved


# Ops that only re-describe memory: no kernel runs for them.
VIEW_OPS = {"view", "unsqueeze", "permute", "select", "t", "expand", "slice", "transpose",
            "squeeze", "_unsafe_view", "alias", "as_strided", "unbind", "split",
            "split_with_sizes", "detach", "unflatten", "reshape", "narrow"}


class ComputeOpCounter(TorchDispatchMode):
    """Counts the dispatched ops that compute (views left out): on a GPU each is about one
    kernel, which is what a CUDA-graph decode step at batch 1 pays for."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket).split(".")[-1] not in VIEW_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))
