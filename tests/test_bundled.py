"""The bundled model's cache: verified by a manifest, rebuilt when broken, in memory when
the cache cannot be written.

The real GGUF conversion takes seconds but a gigabyte, so every rebuild here goes through a
fake `_convert` that writes a tiny random Gemma 3 and a tiny tokenizer; the rest of the code
path (manifest, verification stamp, atomic replace, loading) is the real one.
tests/test_convert.py checks the real conversion.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

import attn.model.bundled as ckpt
import attn.model.loading as models
from attn.compute.forward import analyze
from attn.model.registry import BUNDLED
from attn.settings import Settings
from conftest import ROOT
from helpers import CACHE_DIR, SETTINGS, FakeConversion, wait_until

SMALL_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json")


# ---- verify --------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path, bundled) -> Path:  # `bundled` guarantees the real cache exists
    """The small files of the real converted checkpoint, a small fake model.safetensors,
    and a manifest written by the real code."""
    real = ckpt.checkpoint_dir(CACHE_DIR)
    directory = tmp_path / "ckpt"
    directory.mkdir()
    for name in SMALL_FILES:
        if (real / name).is_file():
            shutil.copy(real / name, directory / name)
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    ckpt._write_manifest(directory, ckpt._gguf_module().EXPECTED_SHA256)
    assert ckpt.verify(directory) is None
    return directory


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_complete_checkpoint_verifies(checkpoint):
    assert ckpt.verify(checkpoint) is None


def test_a_directory_without_a_manifest_is_unfinished(checkpoint):
    (checkpoint / ckpt.MANIFEST).unlink()
    assert "no manifest" in ckpt.verify(checkpoint)


def test_a_truncated_file_is_detected(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    assert "model.safetensors has the wrong size" in ckpt.verify(checkpoint)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_flipped_byte_is_detected(checkpoint, name):
    flip_byte(checkpoint / name)
    assert f"{name} is corrupt" in ckpt.verify(checkpoint)


def test_a_missing_file_is_detected(checkpoint):
    (checkpoint / "tokenizer.json").unlink()
    assert "tokenizer.json is missing" in ckpt.verify(checkpoint)


def test_an_unreadable_manifest_is_detected(checkpoint):
    (checkpoint / ckpt.MANIFEST).write_text("{ not json")
    assert "unreadable manifest" in ckpt.verify(checkpoint)


def test_a_manifest_that_omits_the_weights_is_rejected(checkpoint):
    manifest = checkpoint / ckpt.MANIFEST
    data = json.loads(manifest.read_text())
    del data["files"]["model.safetensors"]
    manifest.write_text(json.dumps(data))
    assert "lacks model.safetensors" in ckpt.verify(checkpoint)


# ---- the verification stamp: no re-hash of a gigabyte on every start ------------------


@pytest.fixture
def settled(checkpoint, monkeypatch) -> Path:
    """The checkpoint, stamped by a full verify once its files are older than RACY_NS
    (shortened here to 50 ms, still far above ext4's timestamp tick)."""
    import time

    monkeypatch.setattr(ckpt, "RACY_NS", 50_000_000)
    time.sleep(0.1)
    assert ckpt.verify(checkpoint) is None
    assert (checkpoint / ckpt.STAMP).is_file()
    return checkpoint


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The names of the files verify hashes from now on."""
    names: list[str] = []
    real = ckpt._sha256

    def counting(path: Path) -> str:
        names.append(path.name)
        return real(path)

    monkeypatch.setattr(ckpt, "_sha256", counting)
    return names


def test_a_stamped_cache_verifies_without_hashing(settled, hashed):
    assert ckpt.verify(settled) is None
    assert hashed == []


def test_a_file_rewritten_since_the_stamp_is_hashed_again(settled, hashed):
    config = settled / "config.json"
    config.write_bytes(config.read_bytes())  # same bytes, new mtime and ctime
    assert ckpt.verify(settled) is None
    assert hashed == ["config.json"]


def test_a_stamp_taken_right_after_a_write_is_not_trusted(checkpoint, hashed):
    # The fixture wrote the files and stamped them within the same instant (RACY_NS is 2 s).
    assert ckpt.verify(checkpoint) is None
    assert "model.safetensors" in hashed


def test_a_changed_manifest_voids_the_stamp(settled, hashed):
    manifest = settled / ckpt.MANIFEST
    manifest.write_text(manifest.read_text() + "\n")
    assert ckpt.verify(settled) is None
    assert sorted(hashed) == sorted(json.loads(manifest.read_text())["files"])


def test_an_unreadable_stamp_means_a_full_rehash(settled, hashed):
    (settled / ckpt.STAMP).write_text("{ not json")
    assert ckpt.verify(settled) is None
    assert "model.safetensors" in hashed


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json"])
def test_a_flipped_byte_is_detected_despite_the_stamp(settled, name):
    flip_byte(settled / name)
    assert f"{name} is corrupt" in ckpt.verify(settled)


def test_a_truncated_file_is_detected_despite_the_stamp(settled):
    weights = settled / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    assert "wrong size" in ckpt.verify(settled)


def test_a_missing_file_is_detected_despite_the_stamp(settled):
    (settled / "model.safetensors").unlink()
    assert "model.safetensors is missing" in ckpt.verify(settled)


def test_a_missing_manifest_is_detected_despite_the_stamp(settled):
    (settled / ckpt.MANIFEST).unlink()
    assert "no manifest" in ckpt.verify(settled)


def test_a_replaced_file_with_the_same_size_is_detected_despite_the_stamp(settled):
    weights = settled / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    replacement = settled / "replacement"
    replacement.write_bytes(bytes(data))
    os.replace(replacement, weights)  # a new inode
    assert "model.safetensors is corrupt" in ckpt.verify(settled)


def test_the_cache_directory_name_carries_the_gguf_digest(tmp_path):
    digest = ckpt._gguf_module().EXPECTED_SHA256
    assert ckpt.checkpoint_dir(tmp_path) == tmp_path / f"gemma-3-270m-{digest[:12]}"


def test_the_cache_root_follows_attn_cache_dir(tmp_path):
    assert Settings.from_env({"ATTN_CACHE_DIR": str(tmp_path / "elsewhere")}).cache_dir == tmp_path / "elsewhere"
    assert Settings.from_env({"XDG_CACHE_HOME": str(tmp_path)}).cache_dir == tmp_path / "attn-demo"


# ---- ensure_checkpoint (with a fake, fast conversion) ---------------------------------


@pytest.fixture
def fake_conversion(monkeypatch, tiny, bpe_tokenizer) -> FakeConversion:
    fake = FakeConversion(tiny, bpe_tokenizer)
    monkeypatch.setattr(ckpt, "_convert", fake)
    return fake


def test_a_fresh_cache_is_converted_once_and_then_reused(tmp_path, fake_conversion):
    directory, in_memory = ckpt.ensure_checkpoint(tmp_path)
    assert in_memory is None
    assert directory == ckpt.checkpoint_dir(tmp_path)
    assert ckpt.verify(directory) is None
    manifest = json.loads((directory / ckpt.MANIFEST).read_text())
    assert manifest["source_sha256"] == ckpt._gguf_module().EXPECTED_SHA256

    again, _ = ckpt.ensure_checkpoint(tmp_path)
    assert again == directory
    assert fake_conversion.calls == 1
    assert not list(tmp_path.glob(".convert-*"))


def test_a_corrupt_cache_is_rebuilt_and_then_verifies(tmp_path, fake_conversion):
    directory, _ = ckpt.ensure_checkpoint(tmp_path)
    flip_byte(directory / "model.safetensors", offset=-10)
    assert "corrupt" in ckpt.verify(directory)

    rebuilt, in_memory = ckpt.ensure_checkpoint(tmp_path)
    assert (rebuilt, in_memory) == (directory, None)
    assert fake_conversion.calls == 2
    assert ckpt.verify(rebuilt) is None


def test_an_unfinished_cache_without_a_manifest_is_rebuilt(tmp_path, fake_conversion):
    target = ckpt.checkpoint_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a conversion killed half way
    directory, _ = ckpt.ensure_checkpoint(tmp_path)
    assert fake_conversion.calls == 1
    assert ckpt.verify(directory) is None


def test_leftovers_of_a_killed_conversion_are_swept(tmp_path, fake_conversion):
    stale = tmp_path / ".convert-abandoned"
    stale.mkdir()
    (stale / "model.gguf").write_bytes(b"half")
    ckpt.ensure_checkpoint(tmp_path)
    assert not stale.exists()


def test_a_failed_conversion_leaves_no_cache_behind(tmp_path, tiny, bpe_tokenizer, monkeypatch):
    monkeypatch.setattr(ckpt, "_convert", FakeConversion(tiny, bpe_tokenizer, fail=True))
    with pytest.raises(RuntimeError, match="conversion died"):
        ckpt.ensure_checkpoint(tmp_path)
    assert not ckpt.checkpoint_dir(tmp_path).exists()
    assert not list(tmp_path.glob(".convert-*"))


def test_an_unwritable_cache_root_converts_in_memory(tmp_path, fake_conversion):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    root = blocker / "cache"  # cannot be created, whoever runs the tests
    directory, in_memory = ckpt.ensure_checkpoint(root)
    assert directory is None
    model, tokenizer = in_memory
    assert model.config.num_hidden_layers == 6
    assert tokenizer("The quick fox")["input_ids"] == fake_conversion.tokenizer("The quick fox")["input_ids"]
    assert not fake_conversion.workdirs[0].exists()  # the scratch dir was temporary


def test_a_corrupt_cache_in_a_read_only_root_is_neither_used_nor_touched(
    tmp_path, fake_conversion, monkeypatch
):
    directory, _ = ckpt.ensure_checkpoint(tmp_path)
    flip_byte(directory / "model.safetensors", offset=-10)
    broken = (directory / "model.safetensors").read_bytes()
    monkeypatch.setattr(ckpt, "_writable", lambda root: False)

    result_dir, in_memory = ckpt.ensure_checkpoint(tmp_path)
    assert result_dir is None and in_memory is not None
    assert (directory / "model.safetensors").read_bytes() == broken


def test_a_valid_cache_in_a_read_only_root_is_used(tmp_path, fake_conversion, monkeypatch):
    directory, _ = ckpt.ensure_checkpoint(tmp_path)
    monkeypatch.setattr(ckpt, "_writable", lambda root: False)
    assert ckpt.ensure_checkpoint(tmp_path) == (directory, None)
    assert fake_conversion.calls == 1


# ---- the conversion started in a process of its own (app.py, before gradio's import) -----


@pytest.mark.slow  # a conversion and a thread, or two processes: seconds
def test_a_load_waits_for_another_converter_and_shows_its_steps(tmp_path, tiny, bpe_tokenizer, monkeypatch):
    release = threading.Event()
    fake = FakeConversion(tiny, bpe_tokenizer)

    def slow(workdir, progress):
        progress("Dequantizing the weights")
        release.wait(20)
        fake(workdir, progress)

    monkeypatch.setattr(ckpt, "_convert", slow)
    with ThreadPoolExecutor(2) as pool:
        converter = pool.submit(ckpt.ensure_checkpoint, tmp_path, lambda message: None)
        wait_until(lambda: (tmp_path / ckpt.PROGRESS_FILE).exists(), "the converter's first step")
        seen: list[str] = []
        waiter = pool.submit(ckpt.ensure_checkpoint, tmp_path, seen.append)
        wait_until(lambda: seen, "the waiting load's progress")
        assert seen[0] == "Another process is converting the model: Dequantizing the weights"
        assert not waiter.done()
        release.set()
        assert converter.result(timeout=60) == waiter.result(timeout=60) == (ckpt.checkpoint_dir(tmp_path), None)
    assert fake.calls == 1
    assert not (tmp_path / ckpt.PROGRESS_FILE).exists()


def test_no_converter_process_starts_when_the_cache_is_ready(tmp_path, fake_conversion):
    ckpt.ensure_checkpoint(tmp_path)
    assert ckpt.convert_in_background(tmp_path) is None


@pytest.mark.slow  # a conversion and a thread, or two processes: seconds
def test_a_converter_process_stops_when_the_app_that_started_it_goes(tmp_path):
    """A converter left behind by a killed app would hold the lock and the CPU."""
    app = subprocess.run(
        [sys.executable, "-c", "import sys; from attn.model.bundled import convert_in_background; "
                               "print(convert_in_background(__import__('pathlib').Path(sys.argv[1])).pid)",
         str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=60,
    )
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(int(app.stdout.strip())).wait(timeout=20)  # it notices that its app has gone, and leaves
    assert not ckpt.checkpoint_dir(tmp_path).exists()


# ---- models.load through the cache ----------------------------------------------------


def test_loading_the_bundled_model_goes_through_the_verified_cache(
    tmp_path, fake_conversion
):
    settings = replace(SETTINGS, cache_dir=tmp_path, device="cpu")
    loaded = models.load(BUNDLED, settings)
    assert fake_conversion.calls == 1
    assert ckpt.verify(ckpt.checkpoint_dir(tmp_path)) is None
    assert loaded.name == BUNDLED and loaded.source == "bundled GGUF"
    assert loaded.layer_types == ["local"] * 5 + ["global"]
    assert analyze(loaded, "The quick brown fox").num_layers == 6

    models.load(BUNDLED, settings)  # second start: read from the cache, no conversion
    assert fake_conversion.calls == 1


def test_loading_the_bundled_model_works_when_the_cache_cannot_be_written(
    tmp_path, fake_conversion
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    loaded = models.load(BUNDLED, replace(SETTINGS, cache_dir=blocker / "cache", device="cpu"))
    assert loaded.dtype == "float32"
    assert analyze(loaded, "The quick brown fox").num_tokens > 1
