"""One stored answer as bytes: a dataclass tree (JSON) and its arrays in one .npz, with its
own digest, and the checks it must pass before it is used.

No pickle anywhere: a file on disk must not be able to run code. The tree is plain JSON;
every numpy array or scalar goes into the .npz as an array of its own, read back with
allow_pickle=False (object arrays are refused when writing). A dataclass is written with
its class's module and name and every field, so fields added to Analysis (or to anything
it holds) are stored without changes here; it is read back only as a dataclass of an
attn.compute module whose fields are exactly the stored ones (a changed class reads as an
old record, never as a half-filled object).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import zipfile

import numpy as np

FORMAT = "attn-record/1"
MODULES = "attn.compute."  # the only modules whose dataclasses a record may name


class RecordError(ValueError):
    """A record that must not be used: truncated, corrupt, foreign or from an older version."""


# ---- the tree --------------------------------------------------------------------------------


def pack(value) -> tuple[object, dict[str, np.ndarray]]:
    """(JSON-able tree, arrays by name) for a value made of dataclasses, lists, tuples, str-keyed
    dicts, numbers, strings, None and numpy arrays or scalars."""
    arrays: dict[str, np.ndarray] = {}

    def walk(x):
        if isinstance(x, (np.ndarray, np.generic)):
            array = np.asarray(x)
            if array.dtype.hasobject:
                raise TypeError("object arrays cannot be stored without pickle")
            name = f"a{len(arrays)}"
            arrays[name] = array.copy(order="C") if not array.flags.c_contiguous else array
            return {"$array": name, "scalar": isinstance(x, np.generic)}
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            cls = type(x)
            return {"$dataclass": f"{cls.__module__}:{cls.__qualname__}",
                    "fields": {f.name: walk(getattr(x, f.name)) for f in dataclasses.fields(x)}}
        if isinstance(x, tuple):
            return {"$tuple": [walk(v) for v in x]}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if not all(isinstance(k, str) for k in x):
                raise TypeError("only dicts with string keys can be stored")
            return {"$dict": {k: walk(v) for k, v in x.items()}}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"a {type(x).__name__} cannot be stored")

    return walk(value), arrays


def unpack(tree, arrays: dict[str, np.ndarray]):
    """The value `pack` was given. Raises RecordError for anything it would not have written."""
    if isinstance(tree, list):
        return [unpack(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "$array" in tree:
        array = arrays.get(tree["$array"])
        if array is None:
            raise RecordError(f"missing array {tree['$array']!r}")
        return array[()] if tree.get("scalar") else array
    if "$tuple" in tree:
        return tuple(unpack(v, arrays) for v in tree["$tuple"])
    if "$dict" in tree:
        return {k: unpack(v, arrays) for k, v in tree["$dict"].items()}
    if "$dataclass" in tree:
        cls = _dataclass(tree["$dataclass"])
        stored = tree.get("fields") or {}
        names = [f.name for f in dataclasses.fields(cls)]
        if sorted(names) != sorted(stored):
            raise RecordError(f"{cls.__name__} has other fields now: an older record")
        obj = cls.__new__(cls)
        for name in names:  # as stored: no __init__ / __post_init__ runs on stored data
            object.__setattr__(obj, name, unpack(stored[name], arrays))
        return obj
    raise RecordError("unknown node in the record")


def _dataclass(name: str) -> type:
    module, _, qualname = str(name).partition(":")
    if not module.startswith(MODULES) or not qualname.isidentifier():
        raise RecordError(f"a record may not name {name!r}")
    try:
        cls = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        raise RecordError(f"no class {name!r}: an older record") from None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise RecordError(f"{name!r} is not a dataclass")
    return cls


# ---- the bytes ---------------------------------------------------------------------------------


def digest_of(header: bytes, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the header and every array's name, dtype, shape and bytes."""
    h = hashlib.sha256(header)
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def to_bytes(header: dict, value) -> bytes:
    """A record: `header` (JSON-able; the store's key and ids) plus `value`, as .npz bytes."""
    tree, arrays = pack(value)
    text = json.dumps({"format": FORMAT, **header, "value": tree}, sort_keys=True, separators=(",", ":"))
    head = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    digest = np.frombuffer(digest_of(head.tobytes(), arrays).encode("ascii"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, header=head, digest=digest, **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes) -> tuple[dict, object]:
    """(header, value) of a record, checked against its own digest. Raises RecordError."""
    if not data:
        raise RecordError("empty file")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            entries = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise RecordError(f"unreadable ({type(exc).__name__})") from None
    head, digest = entries.pop("header", None), entries.pop("digest", None)
    if head is None or digest is None or head.dtype != np.uint8 or digest.dtype != np.uint8:
        raise RecordError("not a record")
    if digest.tobytes().decode("ascii", "replace") != digest_of(head.tobytes(), entries):
        raise RecordError("wrong digest")
    try:
        header = json.loads(head.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RecordError("unreadable header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordError("another format or version")
    tree = header.pop("value", None)
    return header, unpack(tree, entries)
