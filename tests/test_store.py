"""The analysis store's records and folder (attn/compute/record.py, attn/compute/store.py):
exact round trips without pickle, a verified read, the byte bound, and what it finds wrong."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import time
import zipfile

import numpy as np
import pytest

from attn.compute import record, store
from attn.compute.ablation import Ablation, Deletion
from attn.compute.analysis import Analysis, LensLayer
from attn.compute.record import RecordError
from attn.compute.store import Store, StoreKey
from helpers import IDENTITY, made_up


def full_analysis(seed: int = 0) -> Analysis:
    """A made-up analysis with every optional field set, so every field is stored."""
    a = made_up(["The", " cat", " sat"], seed=seed)
    rng = np.random.default_rng(seed)
    return dataclasses.replace(
        a, full=rng.random((2, 2, 4, 4)).astype(np.float16),
        logit_lens=[LensLayer(" mat", 7, 0.25, np.float32(0.125)), LensLayer(" next", 1, 0.5, 0.5)],
        value_norms=rng.random((2, 2, 4)).astype(np.float32), rollout=np.full(4, 0.25, np.float32),
        generated_from=3, final_hidden=rng.random(8).astype(np.float32), words=True, pieces=5)


def ablation_of(a: Analysis) -> Ablation:
    return Ablation(model=a.model, prompt=a.prompt, tokens=list(a.tokens), next_token=a.next_token,
                    next_token_id=a.next_token_id, p_next=0.5,
                    deletions=[Deletion(j, a.tokens[j], 0.1 * j, 0.1 * j - 0.5) for j in range(1, a.num_tokens)],
                    exhaustive=True)


def same(x, y) -> bool:
    """Equal to the bit, types and dtypes included, through dataclasses, lists and tuples."""
    if type(x) is not type(y):
        return False
    if isinstance(x, (np.ndarray, np.generic)):
        return x.dtype == y.dtype and np.shape(x) == np.shape(y) and np.array_equal(x, y)
    if dataclasses.is_dataclass(x):
        return all(same(getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x))
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
    return x == y


def key(prompt: str = "The cat sat", kind: str = "analysis", identity=IDENTITY) -> StoreKey:
    return StoreKey(kind, identity, (prompt,), (("top_k", 10),))


def ids(a: Analysis) -> list:
    return [a.token_ids]


# ---- records ------------------------------------------------------------------------------------


def test_every_field_of_an_analysis_comes_back_exactly():
    a = full_analysis()
    header, back = record.from_bytes(record.to_bytes({"note": "x"}, a))
    assert header["note"] == "x"
    assert same(back, a)
    assert back.spans == a.spans and isinstance(back.spans[1], tuple)  # tuples stay tuples


def test_a_real_analysis_comes_back_exactly(thirsty_analysis):
    _, back = record.from_bytes(record.to_bytes({}, thirsty_analysis))
    assert same(back, thirsty_analysis)
    assert back.to_json() == thirsty_analysis.to_json()


def test_a_changed_byte_fails_the_records_own_digest():
    a = full_analysis()
    data = record.to_bytes({}, a)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    entries["a0"] = entries["a0"].copy()
    entries["a0"].flat[0] += 1  # the token ids, changed; header and digest kept
    forged = io.BytesIO()
    np.savez_compressed(forged, **entries)
    with pytest.raises(RecordError, match="wrong digest"):
        record.from_bytes(forged.getvalue())


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 not really a zip", b"\x00" * 100], ids=["empty", "junk", "zeros"])
def test_bytes_that_are_not_a_record_are_refused(data):
    with pytest.raises(RecordError):
        record.from_bytes(data)


def test_a_truncated_record_is_refused():
    data = record.to_bytes({}, full_analysis())
    for cut in (len(data) // 3, len(data) - 10):
        with pytest.raises(RecordError):
            record.from_bytes(data[:cut])


def test_a_pickled_object_array_is_never_loaded():
    payload = io.BytesIO()
    np.savez(payload, header=np.frombuffer(b"{}", np.uint8), digest=np.frombuffer(b"0", np.uint8),
             a0=np.array([{"x": 1}], dtype=object))  # np.savez pickles object arrays
    with pytest.raises(RecordError):
        record.from_bytes(payload.getvalue())
    with pytest.raises(TypeError, match="object arrays"):
        record.to_bytes({}, np.array([object()], dtype=object))


@pytest.mark.parametrize("name", ["os:system", "builtins:dict", "attn.compute.analysis:SCHEMA",
                                  "attn.compute.analysis:Analysis.nbytes", "tests.helpers:Thing"])
def test_a_record_may_name_only_dataclasses_of_the_computation(name):
    with pytest.raises(RecordError):
        record.unpack({"$dataclass": name, "fields": {}}, {})


def test_a_class_whose_fields_changed_reads_as_an_older_record():
    tree, arrays = record.pack(full_analysis())
    del tree["fields"]["pieces"]  # as written before `pieces` existed
    with pytest.raises(RecordError, match="other fields"):
        record.unpack(tree, arrays)


# ---- the folder -------------------------------------------------------------------------------


def test_a_stored_answer_is_found_by_its_prompt_and_counted(tmp_path):
    s, a = Store(tmp_path, 1 << 20), full_analysis()
    assert s.get(key(), Analysis) is None
    assert s.put(key(), ids(a), a)
    assert same(s.get(key(), Analysis), a)
    stats = s.stats()
    assert (stats.hits, stats.misses, stats.writes) == (1, 1, 1) and 0 < stats.bytes <= stats.max_bytes


def test_records_are_named_by_their_token_ids_and_key(tmp_path):
    s, a = Store(tmp_path, 1 << 20), full_analysis()
    s.put(key(), ids(a), a)
    (path,) = (tmp_path / "records").iterdir()
    assert path.stem == store.content_address(key().fields(), ids(a))
    assert path.stem != store.content_address(key().fields(), [a.token_ids[:-1]])


@pytest.mark.parametrize("other", [
    dict(kind="ablation"), dict(prompt="The cat sat "),
    dict(identity=dataclasses.replace(IDENTITY, name="gemma-3-1b")),
    dict(identity=dataclasses.replace(IDENTITY, dtype="bfloat16")),
    dict(identity=dataclasses.replace(IDENTITY, device="cuda")),
    dict(identity=dataclasses.replace(IDENTITY, digest="another-file")),
], ids=["kind", "prompt", "model", "dtype", "device", "digest"])
def test_an_answer_is_served_only_under_its_own_key(tmp_path, other):
    s, a = Store(tmp_path, 1 << 20), full_analysis()
    s.put(key(), ids(a), a)
    assert s.get(key(**other), Analysis) is None


def test_a_record_of_another_type_than_asked_is_not_served(tmp_path):
    s, a = Store(tmp_path, 1 << 20), full_analysis()
    s.put(key(kind="ablation"), ids(a), a)  # an Analysis where an Ablation belongs
    assert s.get(key(kind="ablation"), Ablation) is None


def test_the_bound_evicts_the_answer_used_longest_ago(tmp_path):
    answers = [dataclasses.replace(full_analysis(), token_ids=np.arange(4, dtype=np.int64) + 10 * i) for i in range(4)]
    s = Store(tmp_path, 1 << 20)
    sizes = []
    for i, a in enumerate(answers[:3]):
        s.put(key(f"p{i}"), ids(a), a)
        sizes.append(s.stats().bytes - sum(sizes))
    for i, path in enumerate(sorted((tmp_path / "records").iterdir(), key=lambda p: p.stat().st_mtime_ns)):
        os.utime(path, (time.time() - 1000 + i,) * 2)  # p0, p1, p2: written in that order, plainly apart
    s.max_bytes = int(3.5 * max(sizes))  # room for three
    assert s.get(key("p0"), Analysis) is not None  # used now: p1 is the one used longest ago
    s.put(key("p3"), ids(answers[3]), answers[3])
    assert s.get(key("p1"), Analysis) is None
    assert all(s.get(key(p), Analysis) is not None for p in ("p0", "p2", "p3"))
    assert s.stats().bytes <= s.max_bytes


def test_an_answer_larger_than_the_bound_is_not_stored(tmp_path):
    s = Store(tmp_path, 1000)
    assert not s.put(key(), ids(full_analysis()), full_analysis())
    assert s.get(key(), Analysis) is None


def test_a_read_only_layer_is_read_after_the_writable_one_and_never_written(tmp_path):
    shipped, own, a = tmp_path / "shipped", tmp_path / "own", full_analysis()
    Store(shipped, 1 << 20).put(key(), ids(a), a)
    before = sorted(p.name for p in shipped.rglob("*"))
    s = Store(own, 1 << 20, [shipped])
    assert same(s.get(key(), Analysis), a)
    s.put(key("another"), ids(a), a)
    assert sorted(p.name for p in shipped.rglob("*")) == before and (own / "records").is_dir()


def test_a_bad_record_in_a_read_only_layer_is_logged_once_and_never_served(tmp_path, caplog):
    shipped, a = tmp_path / "shipped", full_analysis()
    Store(shipped, 1 << 20).put(key(), ids(a), a)
    (path,) = (shipped / "records").iterdir()
    path.write_bytes(path.read_bytes()[:100])
    s = Store(None, 1 << 20, [shipped])
    with caplog.at_level(logging.WARNING, logger="attn.compute.store"):
        assert s.get(key(), Analysis) is None and s.get(key(), Analysis) is None
    assert [r.getMessage() for r in caplog.records if str(path) in r.getMessage()] != []
    assert len([r for r in caplog.records if str(path) in r.getMessage()]) == 1
    assert path.exists()  # a read-only layer is never changed


def test_temporary_files_a_killed_process_left_are_swept(tmp_path):
    s, a = Store(tmp_path, 1 << 20), full_analysis()
    s.put(key(), ids(a), a)
    stale = tmp_path / "records" / ".abc.npz.123.456.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 2 * store.STALE_TMP_S,) * 2)
    fresh = tmp_path / "records" / ".def.npz.123.456.tmp"
    fresh.write_bytes(b"being written")
    s.evict()
    assert not stale.exists() and fresh.exists()


def test_an_ablation_round_trips_through_the_store(tmp_path):
    s, a = Store(tmp_path, 1 << 20), full_analysis()
    s.put(key(kind="ablation"), ids(a), ablation_of(a))
    assert same(s.get(key(kind="ablation"), Ablation), ablation_of(a))


def test_the_index_entry_is_plain_text_and_the_header_names_the_key(tmp_path):
    s, a = Store(tmp_path, 1 << 20), full_analysis()
    s.put(key(), ids(a), a)
    (ref,) = (tmp_path / "index").iterdir()
    address = ref.read_text()
    header, _ = record.from_bytes((tmp_path / "records" / f"{address}.npz").read_bytes())
    assert header["key"] == key().fields() and header["texts"] == ["The cat sat"]
    assert header["ids"] == [a.token_ids.tolist()] and header["address"] == address
    assert header["key"]["version"] == store.VERSION
    with zipfile.ZipFile(tmp_path / "records" / f"{address}.npz") as z:  # arrays and the header, nothing else
        assert {n.removesuffix(".npy") for n in z.namelist()} >= {"header", "digest"}
    json.dumps(header)  # plain JSON


def test_a_record_with_a_valid_digest_but_a_malformed_tree_is_dropped(tmp_path):
    """A digest is not a signature: bytes made to pass it are still checked node by node."""
    s, a = Store(tmp_path, 1 << 20), full_analysis()
    s.put(key(), ids(a), a)
    (path,) = (tmp_path / "records").iterdir()
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    header = json.loads(entries["header"].tobytes())
    header["value"]["fields"]["spans"] = {"$tuple": 5}  # not a list
    entries["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    entries["digest"] = np.frombuffer(record.digest_of(entries["header"].tobytes(), {
        k: v for k, v in entries.items() if k not in ("header", "digest")}).encode(), np.uint8)
    np.savez_compressed(path, **entries)
    assert s.get(key(), Analysis) is None and not path.exists() and s.stats().dropped == 1


def test_a_value_the_format_cannot_hold_is_kept_in_memory_only(tmp_path, caplog):
    s = Store(tmp_path, 1 << 20)
    odd = dataclasses.replace(full_analysis(), tokens={"a set"})
    with caplog.at_level(logging.WARNING, logger="attn.compute.store"):
        assert not s.put(key(), ids(odd), odd) and not s.put(key(), ids(odd), odd)
    assert len([m for m in caplog.messages if "cannot store" in m]) == 1
    assert s.stats().writable and not (tmp_path / "records").exists()
