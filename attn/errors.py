"""Errors the engine raises on purpose; each carries a message fit to show a user."""


class AttnError(Exception):
    """Base class: anything the UI may show verbatim."""


class PromptError(AttnError, ValueError):
    """The prompt cannot be analysed (empty, too long, no tokens)."""


class UnknownModelError(AttnError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown model"


class ModelUnavailableError(AttnError, RuntimeError):
    """A registered model that cannot be loaded here (no token, offline, broken cache)."""


class IntegrityError(AttnError, RuntimeError):
    """Attention weights that break the softmax/mask invariants: never shown."""


class AnalysisFailedError(AttnError, RuntimeError):
    """The model raised while analysing a prompt; the server keeps serving."""


class ViewError(AttnError, ValueError):
    """A view request out of range (layer, head, mode)."""


def echo(value, limit: int = 40) -> str:
    """User input quoted in a message, reduced to characters that cannot form markup."""
    text = "".join(ch for ch in str(value) if ch.isalnum() or ch in " ._-")
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


class PlatformError(AttnError, RuntimeError):
    """The GPU platform's answer to one request, not to its prompt: never cached, and never
    handed to another request waiting on the same prompt (that one tries for itself)."""

    kind = "other"  # for /stats


class GpuRefusedError(PlatformError):
    """ZeroGPU refused or dropped a call (quota, pending credits, no GPU free, task aborted):
    the platform's own message, and its kind for /stats."""

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # pickled with its kind
        return type(self), (str(self), self.kind)


class GpuFaultError(PlatformError):
    """CUDA failed inside a GPU worker (out of memory, a device fault). Raised, not returned,
    so that spaces replaces the worker; the next call gets a fresh one."""

    kind = "gpu_fault"
