"""The cuda of a ZeroGPU Space, emulated on a CPU: `spaces.zero.torch` for bench/fake_spaces.py.

On a Space, `import spaces` enters a torch function mode in the main thread: a move to cuda
there is recorded and the weights stay on the host until a GPU worker copies them in. The mode
is per thread: from any other thread, cuda is reached for real, and spaces' patched CUDA init
raises. Here the same: in the thread that calls `patch`, a move to cuda is done on the CPU (the
fake GPU's memory is the host's) and counted; elsewhere it raises spaces' own error. (The real
module cannot even be imported with a CPU-only torch.)
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

# spaces/zero/torch/patching.py, _cuda_init_raise: what touching cuda outside the emulation raises.
CUDA_INIT_MESSAGE = ("Low-level CUDA init (`torch._C._cuda_init`) reached. This means ZeroGPU's PyTorch CUDA "
                     "emulation mode did not intercept a CUDA operation in your code.\n"
                     "Check this stacktrace to locate the trigger.")


def _is_cuda(value) -> bool:
    return (isinstance(value, torch.device) and value.type == "cuda") or (
        isinstance(value, str) and value.startswith("cuda"))


class CudaOnCpu(TorchFunctionMode):
    """A move to cuda, done on the CPU and counted (the fake GPU's memory is the host's)."""

    def __init__(self, placements: Counter):
        super().__init__()
        self.placements = placements

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        moved = False
        if func is torch.Tensor.cuda:
            func, args, moved = torch.Tensor.to, (args[0], "cpu"), True
        if func is torch.Tensor.to and any(_is_cuda(a) for a in args[1:]):
            args, moved = (args[0], *("cpu" if _is_cuda(a) else a for a in args[1:])), True
        if _is_cuda(kwargs.get("device")):
            kwargs["device"], moved = "cpu", True
        if moved:
            self.placements[threading.current_thread().name] += 1
        return func(*args, **kwargs)


class FakeZeroTorch(types.ModuleType):
    """Stands in for `spaces.zero.torch`: what `import spaces` patches on a Space (`patch`,
    in its thread), and what a worker undoes and sets up (`unpatch`, `init`, `move`)."""

    def __init__(self):
        super().__init__("spaces.zero.torch")
        self.placements: Counter = Counter()  # moves to cuda, by thread
        self._mode: CudaOnCpu | None = None
        self._lazy_init = torch.cuda._lazy_init

    def patch(self) -> None:
        self._mode = CudaOnCpu(self.placements)
        self._mode.__enter__()

        def cuda_init_raise(*args, **kwargs):
            raise RuntimeError(CUDA_INIT_MESSAGE)

        torch.cuda._lazy_init = cuda_init_raise

    def unpatch(self) -> None:
        torch.cuda._lazy_init = self._lazy_init
        if self._mode is not None:
            with contextlib.suppress(Exception):  # entered in another thread: nothing to leave here
                self._mode.__exit__(None, None, None)
            self._mode = None

    def enter_mode(self) -> None:
        pass

    def init(self, nvidia_uuid: str) -> None:
        pass  # the fake GPU is the CPU: nothing to start

    def move(self, callback=None) -> None:
        pass

    @staticmethod
    def pack() -> int:
        return 0

    @staticmethod
    def size() -> int:
        return 0

    @staticmethod
    def is_in_bad_fork() -> bool:
        return False
