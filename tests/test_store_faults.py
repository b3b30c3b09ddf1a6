"""The analysis store's faults (issue 21): each gets its answer, with nothing partial left behind.

A record from another model, another dtype or an older version, a wrong digest, a zero-byte
file, a directory where a file should be: never served, dropped, logged, and the answer
recomputed (and stored again). A store that is not writable, or a disk that fills during a
write: the answer still comes, the store goes on in memory only, with one log line. Two
processes storing the same prompt at once: one valid record. The store's folder deleted
while the app runs: made again.

The processes that must not be able to write run as children: with permission bits that
forbid writing (root loses CAP_DAC_OVERRIDE first, which would ignore them), or with a file
size limit (RLIMIT_FSIZE: the kernel refuses the write part way, as a full disk does).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from attn.compute import store
from attn.compute.analysis import Analysis
from attn.compute.store import Store, StoreKey
from attn.model.registry import BUNDLED
from helpers import IDENTITY, THIRSTY, made_up, store_engine

ROOT = Path(__file__).resolve().parents[1]
LOGGER = "attn.compute.store"


@pytest.fixture
def fresh(gpt2, tmp_path):
    """fresh(identity=IDENTITY): a new engine (the tiny GPT-2 as the bundled model) on the
    store in tmp_path/store, as a restarted app process would have it."""
    def make(identity=IDENTITY, directory=None):
        return store_engine(gpt2, directory or tmp_path / "store", (identity.name,), identity=identity)

    return make


def files(directory: Path, sub: str) -> list[Path]:
    return sorted(p for p in (directory / sub).iterdir()) if (directory / sub).is_dir() else []


def answered_again(fresh, expected) -> None:
    """A new process recomputes the answer once and stores it; the next one reads it back."""
    engine = fresh()
    assert engine.analyze(THIRSTY, BUNDLED).to_json() == expected
    assert engine.forward_calls == 1
    again = fresh()
    assert again.analyze(THIRSTY, BUNDLED).to_json() == expected and again.forward_calls == 0


@pytest.fixture
def stored(fresh, tmp_path):
    """THIRSTY analysed and stored: (its JSON, the record's path, the index entry's path)."""
    expected = fresh().analyze(THIRSTY, BUNDLED).to_json()
    (path,), (ref,) = files(tmp_path / "store", "records"), files(tmp_path / "store", "index")
    return expected, path, ref


def dropped_lines(caplog, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and str(path) in r.getMessage()]


# ---- records that must not be served ---------------------------------------------------------------


@pytest.mark.parametrize("other", [dict(name="gemma-3-1b"), dict(dtype="bfloat16"), dict(device="cuda"),
                                   dict(digest="another-checkpoint")], ids=["model", "dtype", "device", "digest"])
def test_a_record_of_another_model_or_dtype_in_place_of_ours_is_dropped(fresh, stored, tmp_path, caplog, other):
    """Another key's record copied to the name this key's lookup reads (a foreign file)."""
    expected, path, ref = stored
    ours = dataclasses.replace(IDENTITY, **other)
    key = StoreKey("analysis", ours, (THIRSTY,), stored_options())
    ids = [fresh().analyze(THIRSTY, BUNDLED).token_ids]
    foreign = path.with_name(store.content_address(key.fields(), ids) + ".npz")
    shutil.copy(path, foreign)
    (ref.parent / f"{key.index_address()}.ref").write_text(foreign.stem)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        engine = fresh(identity=ours)
        assert engine.analyze(THIRSTY, ours.name).to_json()["tokens"] == expected["tokens"]
    assert engine.forward_calls == 1 and len(dropped_lines(caplog, foreign)) == 1
    again = fresh(identity=ours)
    assert again.analyze(THIRSTY, ours.name).to_json()["tokens"] == expected["tokens"] and again.forward_calls == 0
    answered = fresh()
    assert answered.analyze(THIRSTY, BUNDLED).to_json() == expected and answered.forward_calls == 0  # untouched


def test_an_index_entry_pointing_to_another_dtypes_record_is_dropped_and_the_record_kept(fresh, stored, tmp_path,
                                                                                          caplog):
    expected, path, ref = stored
    ours = dataclasses.replace(IDENTITY, dtype="bfloat16")
    (ref.parent / f"{StoreKey('analysis', ours, (THIRSTY,), stored_options()).index_address()}.ref").write_text(
        path.stem)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        engine = fresh(identity=ours)
        engine.analyze(THIRSTY, BUNDLED)
    assert engine.forward_calls == 1 and path.exists()
    assert any("points to another answer" in line for line in caplog.messages)
    answered = fresh()
    assert answered.analyze(THIRSTY, BUNDLED).to_json() == expected and answered.forward_calls == 0


def test_a_record_of_an_older_schema_version_is_dropped_and_recomputed(fresh, tmp_path, caplog, monkeypatch):
    with monkeypatch.context() as old:
        old.setattr(store, "VERSION", "attn-analysis/1|attn-record/1|store/1")
        expected = fresh().analyze(THIRSTY, BUNDLED).to_json()
    (path,) = files(tmp_path / "store", "records")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        answered_again(fresh, expected)
    assert not path.exists() and len(dropped_lines(caplog, path)) == 1
    assert "older version" in dropped_lines(caplog, path)[0]


def test_a_record_with_a_wrong_digest_is_dropped_and_recomputed(fresh, stored, caplog):
    expected, path, _ = stored
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    entries["digest"] = np.frombuffer(b"0" * 64, np.uint8)
    np.savez_compressed(path, **entries)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        answered_again(fresh, expected)
    assert "wrong digest" in dropped_lines(caplog, path)[0]


@pytest.mark.parametrize("which", ["record", "index entry"])
def test_a_zero_byte_file_is_dropped_and_recomputed(fresh, stored, caplog, which):
    expected, path, ref = stored
    target = path if which == "record" else ref
    target.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        answered_again(fresh, expected)
    assert len(dropped_lines(caplog, target)) == 1


@pytest.mark.parametrize("which", ["record", "index entry"])
def test_a_directory_where_a_file_should_be_is_dropped_and_recomputed(fresh, stored, caplog, which):
    expected, path, ref = stored
    target = path if which == "record" else ref
    target.unlink()
    (target / "inside").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        answered_again(fresh, expected)
    assert target.is_file() and len(dropped_lines(caplog, target)) == 1


def test_a_file_where_the_records_folder_should_be_is_replaced(fresh, tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "records").write_text("not a folder")
    expected = fresh().analyze(THIRSTY, BUNDLED).to_json()
    answered = fresh()
    assert answered.analyze(THIRSTY, BUNDLED).to_json() == expected and answered.forward_calls == 0


# ---- a store that cannot be written -----------------------------------------------------------------


def test_a_store_whose_folder_cannot_be_made_answers_from_memory_with_one_log_line(gpt2, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("the store's parent is a file")
    engine = store_engine(gpt2, blocker / "store")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        first = engine.analyze(THIRSTY, BUNDLED)
        engine.analyze(THIRSTY + " again", BUNDLED)
    assert engine.analyze(THIRSTY, BUNDLED) is first and engine.forward_calls == 2  # the memory cache serves
    assert len([m for m in caplog.messages if "memory only" in m]) == 1
    assert engine.stored.stats().writable is False and blocker.read_text() == "the store's parent is a file"


CHILD = """
import json, logging, resource, signal, sys
from pathlib import Path
import test_store_faults as t
print(json.dumps(t.child(sys.argv[1], Path(sys.argv[2]))))
"""


def run_child(scenario: str, directory: Path, **popen) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    done = subprocess.run([sys.executable, "-c", CHILD, scenario, str(directory)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, **popen)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def big(seed: int) -> Analysis:
    """A made-up analysis whose record is tens of kB (random weights do not compress)."""
    return made_up([f" w{i}" for i in range(1000)], seed=seed)


def child_key(prompt: str) -> StoreKey:
    return StoreKey("analysis", IDENTITY, (prompt,))


def child(scenario: str, directory: Path) -> dict:
    """Run in a child process: one scenario against the store in `directory`."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s", stream=sys.stderr)
    lines = []
    logging.getLogger(LOGGER).addHandler(_Collect(lines))
    if scenario == "read-only":
        _drop_root_override()
        probe = directory / "probe"
        try:
            probe.write_text("x")
            return {"error": "this process can still write to a read-only folder"}
        except PermissionError:
            pass
    elif scenario == "full-disk":
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    s = Store(directory, 1 << 30)
    if scenario == "same-record":
        start = directory.parent / "go"
        while not start.exists():
            time.sleep(0.001)
        for _ in range(40):
            s.put(child_key("same"), [big(0).token_ids], big(0))
        return {"writes": s.stats().writes}
    served = s.get(child_key("old"), Analysis)
    written = [s.put(child_key(f"new {i}"), [big(i).token_ids + 10000 * (i + 1)], big(i)) for i in range(2)]
    return {"served": served is not None and served.to_json() == big(9).to_json(), "written": written,
            "writable": s.stats().writable, "lines": lines}


class _Collect(logging.Handler):
    def __init__(self, lines):
        super().__init__()
        self.lines = lines

    def emit(self, rec):
        self.lines.append(rec.getMessage())


def _drop_root_override() -> None:
    """Make permission bits bind this process even as root: drop CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH and CAP_FOWNER from its effective capabilities."""
    if os.geteuid() != 0:
        return
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()
    assert libc.capget(ctypes.byref(header), data) == 0
    data[0].effective &= ~((1 << 1) | (1 << 2) | (1 << 3))
    assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()


@pytest.fixture
def filled(tmp_path):
    """A store folder holding one record ("old"), outside pytest's private tmp root."""
    directory = Path(tempfile.mkdtemp(prefix="attn-store-")) / "store"
    Store(directory, 1 << 30).put(child_key("old"), [big(9).token_ids], big(9))
    yield directory
    for path in [directory.parent, *directory.parent.rglob("*")]:
        if path.is_dir():
            path.chmod(stat.S_IRWXU)
    shutil.rmtree(directory.parent, ignore_errors=True)


def test_a_store_that_is_not_writable_serves_what_it_has_and_keeps_new_answers_in_memory(filled):
    for path in [filled, *filled.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = sorted(p.name for p in filled.rglob("*"))
    result = run_child("read-only", filled)
    assert "error" not in result, result["error"]
    assert result["served"] and result["written"] == [False, False] and not result["writable"]
    assert len([line for line in result["lines"] if "memory only" in line]) == 1, result["lines"]
    assert sorted(p.name for p in filled.rglob("*")) == before  # nothing partial left behind


def test_a_disk_that_fills_during_a_write_leaves_nothing_partial(filled):
    before = sorted(p.name for p in filled.rglob("*"))
    result = run_child("full-disk", filled)
    assert result["served"] and result["written"] == [False, False] and not result["writable"]
    assert len([line for line in result["lines"] if "memory only" in line]) == 1, result["lines"]
    assert sorted(p.name for p in filled.rglob("*")) == before  # no temporary file, no half record


def test_two_processes_storing_the_same_prompt_at_once_leave_one_valid_record(tmp_path, caplog):
    directory = tmp_path / "store"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, "same-record", str(directory)], cwd=ROOT,
                                 env=dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}"),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    reader, seen = Store(directory, 1 << 30), 0
    time.sleep(1.5)  # both children imported and waiting
    (tmp_path / "go").touch()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        while any(c.poll() is None for c in children):
            found = reader.get(child_key("same"), Analysis)
            seen += found is not None
            assert found is None or found.to_json() == big(0).to_json()
    outputs = [c.communicate() for c in children]
    assert all(c.returncode == 0 for c in children), [err[-2000:] for _, err in outputs]
    assert [json.loads(out.splitlines()[-1])["writes"] for out, _ in outputs] == [40, 40]
    assert caplog.messages == []  # no reader ever saw a partial record
    assert [p.suffix for p in files(directory, "records")] == [".npz"] and len(files(directory, "index")) == 1
    assert reader.get(child_key("same"), Analysis).to_json() == big(0).to_json()


def test_a_store_folder_deleted_while_the_app_runs_is_made_again(fresh, stored, tmp_path):
    expected, _, _ = stored
    engine = fresh()
    assert engine.analyze(THIRSTY, BUNDLED).to_json() == expected and engine.forward_calls == 0
    shutil.rmtree(tmp_path / "store")
    other = engine.analyze(THIRSTY + " too", BUNDLED)
    assert engine.forward_calls == 1 and len(files(tmp_path / "store", "records")) == 1
    assert fresh().analyze(THIRSTY + " too", BUNDLED).to_json() == other.to_json()
    answered_again(fresh, expected)  # the deleted one is computed again, then stored again
    assert engine.stored.stats().writable


def stored_options():
    from attn.compute.stored import ANALYSIS_OPTIONS

    return ANALYSIS_OPTIONS
