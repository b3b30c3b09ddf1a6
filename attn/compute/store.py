"""The analysis store: answers kept on disk, so they outlive a restart.

It sits behind the engine's in-memory cache. A record (attn/compute/record.py) is
content-addressed: its file is named by a digest of the model's identity (name, a digest of
its files, dtype, device kind: attn/model/identity.py), the token ids, the options that
change the numbers and the schema/store version. Finding one needs the token ids, and the
ids need the tokenizer (seconds to load); so a small index file, named by the same key with
the prompt's text in place of the ids, points to it. A lookup is then two small reads and
no model. What it finds is checked before use: its own digest, the key in its header
against the one asked for (model, digest, dtype, device, options, text, version), and its
name against its header's address. A record that fails is never served: it is removed,
logged once, and the answer is recomputed.

Writes go to a temporary file renamed into place, so a reader sees a whole record or none,
and two processes writing the same record leave one valid record. The store is bounded in
bytes; the record used longest ago goes first (a read touches its file). A store that
cannot be written (read-only, full, its folder a file) degrades to memory only, with one
log line; one whose folder is deleted while the app runs makes the folder again.

Read-only layers (the records shipped in attn/shipped/ for the presets) are read after the
writable one and never changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from attn.compute import record
from attn.compute.analysis import SCHEMA
from attn.compute.record import RecordError
from attn.model.identity import ModelIdentity

log = logging.getLogger(__name__)

VERSION = f"{SCHEMA}|{record.FORMAT}|store/1"  # a record of any other version is dropped
SHIPPED = Path(__file__).resolve().parents[1] / "shipped"  # the presets' records, in the repository
RECORDS, INDEX = "records", "index"
ADDRESS = re.compile(r"^[0-9a-f]{64}$")
STALE_TMP_S = 3600  # a temporary file this old was left by a killed process


@dataclass(frozen=True)
class StoreKey:
    """What an answer depends on, but for the token ids (which `put` adds)."""

    kind: str  # "analysis", "ablation", "generation", "comparison"
    identity: ModelIdentity
    texts: tuple[str, ...]  # the prompt(s) as typed
    options: tuple[tuple[str, object], ...] = ()  # what else changes the numbers, sorted by name

    def fields(self) -> dict:
        return {"kind": self.kind, **self.identity.as_dict(), "options": dict(self.options), "version": VERSION}

    def index_address(self) -> str:
        """Names the index file: the key with the text, without the version (so a record of
        an older version is found, and dropped, rather than left behind)."""
        fields = {k: v for k, v in self.fields().items() if k != "version"}
        return _sha256({**fields, "texts": list(self.texts)})


def content_address(fields: dict, ids: Sequence[Sequence[int]]) -> str:
    return _sha256({**fields, "ids": [[int(i) for i in row] for row in ids]})


def _sha256(data: dict) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class StoreStats:
    hits: int = 0  # answers served from disk
    misses: int = 0  # lookups that found nothing usable (the answer was then computed)
    dropped: int = 0  # records refused on reading (truncated, corrupt, foreign, old)
    writes: int = 0
    bytes: int = 0  # on disk in the writable folder
    max_bytes: int = 0
    writable: bool = True
    directory: str = ""
    layers: list[str] = field(default_factory=list)  # every folder read, writable one first


class Store:
    def __init__(self, directory: Path | None, max_bytes: int, shipped: Sequence[Path] = ()):
        self.directory = Path(directory) if directory is not None else None
        self.max_bytes = int(max_bytes)
        others = [Path(p) for p in shipped if self.directory is None or Path(p).resolve() != self.directory.resolve()]
        self.layers = ([self.directory] if self.directory is not None else []) + others
        self._writable = self.directory is not None
        self._lock = threading.Lock()
        self._bytes: int | None = None  # counted on first need
        self._logged: set[str] = set()
        self._stats = StoreStats(max_bytes=self.max_bytes)

    # ---- reading ---------------------------------------------------------------------------
    def get(self, key: StoreKey, expect: type, *, misses: bool = True):
        """The stored answer for `key` (an instance of `expect`), or None; counted as a hit, or
        (with `misses`: a lookup the answer is then computed after) a miss."""
        for layer in self.layers:
            value = self._read(layer, key, expect, own=layer == self.directory)
            if value is not None:
                self._count("hits")
                return value
        if misses:
            self._count("misses")
        return None

    def _read(self, layer: Path, key: StoreKey, expect: type, own: bool):
        ref = layer / INDEX / f"{key.index_address()}.ref"
        try:
            address = ref.read_text(encoding="ascii").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError) as exc:
            return self._drop(ref, f"unreadable index entry ({type(exc).__name__})", own)
        if not ADDRESS.match(address):
            return self._drop(ref, "damaged index entry", own)
        path = layer / RECORDS / f"{address}.npz"
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            if own:  # its record was evicted
                with contextlib.suppress(OSError):
                    ref.unlink()
            return None
        except OSError as exc:  # a directory where the file should be, no permission, ...
            return self._drop(path, f"unreadable ({type(exc).__name__})", own)
        try:
            header, value = record.from_bytes(data)
            fields = header.get("key")
            if not isinstance(fields, dict) or content_address(fields, header.get("ids") or []) != address:
                raise RecordError("its contents do not match its name (foreign or damaged)")
            if fields.get("version") != VERSION:
                raise RecordError(f"an older version ({fields.get('version')})")
        except Exception as exc:  # untrusted bytes: whatever fails, the record is not used
            why = str(exc) if isinstance(exc, RecordError) else f"malformed ({type(exc).__name__})"
            return self._drop(path, why, own)
        if fields != key.fields() or header.get("texts") != list(key.texts):
            # A valid record of another key (another model, dtype, or a prompt with the same
            # ids): this index entry is what is wrong.
            return self._drop(ref, "its index entry points to another answer", own)
        if not isinstance(value, expect):
            return self._drop(path, f"holds a {type(value).__name__}, not a {expect.__name__}", own)
        if own:
            with contextlib.suppress(OSError):
                os.utime(path)  # used now: evicted last
        return value

    def _once(self, message: str, key: str | None = None) -> None:
        if (key or message) not in self._logged:
            self._logged.add(key or message)
            log.warning("Analysis store: %s", message)

    def _drop(self, path: Path, why: str, own: bool) -> None:
        """A file that must not be used: removed (from the writable folder), logged once."""
        self._once(f"dropped {path}: {why}; the answer is recomputed", key=str(path))
        self._count("dropped")
        if own:
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        return None

    # ---- writing ---------------------------------------------------------------------------
    def put(self, key: StoreKey, ids: Sequence[Sequence[int]], value) -> bool:
        """Keep `value` (computed from token ids `ids`, one row per prompt). False when it was
        not written (no writable store, or too large for the bound)."""
        if not self._writable:
            return False
        address = content_address(key.fields(), ids)
        header = {"key": key.fields(), "texts": list(key.texts), "ids": [[int(i) for i in row] for row in ids],
                  "address": address}
        try:
            data = record.to_bytes(header, value)
        except (TypeError, ValueError) as exc:  # a value the record format cannot hold: kept in memory
            self._once(f"cannot store a {type(value).__name__}: {exc}")
            return False
        if len(data) > self.max_bytes:
            return False
        try:
            self._write(self.directory / RECORDS / f"{address}.npz", data)
            self._write(self.directory / INDEX / f"{key.index_address()}.ref", address.encode("ascii"))
        except OSError as exc:
            self._degrade(exc)
            return False
        self._count("writes")
        with self._lock:
            if self._bytes is not None:
                self._bytes += len(data) + len(address)
            over = self._bytes is None or self._bytes > self.max_bytes
        if over:
            self.evict()
        return True

    def _write(self, path: Path, data: bytes) -> None:
        """`data` into `path` whole or not at all; one retry after clearing the way (the folder
        deleted meanwhile, a directory where the file should be, a file where a folder should be)."""
        for attempt in (0, 1):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                    os.replace(tmp, path)
                    return
                finally:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
            except (IsADirectoryError, NotADirectoryError, FileExistsError, FileNotFoundError):
                if attempt or not self._clear_way(path):
                    raise

    def _clear_way(self, path: Path) -> bool:
        """Remove what stands where `path` or its folder (inside the store) should be; True
        when a retry may succeed."""
        if path.is_dir() and not path.is_symlink():
            self._drop(path, "a directory where a record should be", own=True)
            return True
        if path.parent.exists() and not path.parent.is_dir():
            self._drop(path.parent, "a file where the store's folder should be", own=True)
            return True
        return not path.parent.exists()  # deleted meanwhile: made again on the retry

    def _degrade(self, exc: OSError) -> None:
        with self._lock:
            if not self._writable:
                return
            self._writable = False
        log.warning("Analysis store %s cannot be written (%s: %s): new answers are kept in memory only",
                    self.directory, type(exc).__name__, exc.strerror or exc)

    def evict(self) -> None:
        """Remove the records used longest ago until the folder is within its bound (and
        temporary files a killed process left behind)."""
        files, now = [], time.time()
        for sub in (RECORDS, INDEX):
            with contextlib.suppress(OSError), os.scandir(self.directory / sub) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        st = entry.stat(follow_symlinks=False)
                        if entry.name.startswith("."):
                            if entry.name.endswith(".tmp") and now - st.st_mtime > STALE_TMP_S:
                                os.unlink(entry.path)
                            continue
                        if entry.is_file(follow_symlinks=False):
                            files.append((st.st_mtime, st.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= size
        with self._lock:
            self._bytes = total

    # ---- numbers -----------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + 1)

    def stats(self) -> StoreStats:
        if self._bytes is None and self.directory is not None:
            self.evict()  # counts the folder (and keeps it within its bound)
        with self._lock:
            s = self._stats
            return StoreStats(s.hits, s.misses, s.dropped, s.writes, self._bytes or 0, self.max_bytes,
                              self._writable, str(self.directory or ""), [str(p) for p in self.layers])
