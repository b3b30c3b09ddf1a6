"""The presets' records shipped in attn/shipped/ are what the engine computes today, and
`python -m attn warm` is how they are made: a stale record cannot ship."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attn.compute import stored
from attn.compute.store import SHIPPED, Store, StoreKey
from attn.model import identity
from attn.model.registry import BUNDLED
from attn.settings import Settings
from helpers import EXAMPLES, PRESETS, engine_with

ROOT = Path(__file__).resolve().parents[1]


def close(shipped, computed, path: str = "") -> list[str]:
    """Where two answers differ: exactly for ids, tokens and text; numbers within float32
    rounding across CPUs and thread counts (2e-5, plus 5e-5 of the array's largest value:
    a final hidden state of magnitude 500 moved by 0.008 between one thread and two)."""
    if dataclasses.is_dataclass(shipped):
        if type(shipped) is not type(computed):
            return [f"{path}: {type(shipped).__name__} vs {type(computed).__name__}"]
        return [d for f in dataclasses.fields(shipped)
                for d in close(getattr(shipped, f.name), getattr(computed, f.name), f"{path}.{f.name}")]
    if isinstance(shipped, (list, tuple)):
        if len(shipped) != len(computed):
            return [f"{path}: {len(shipped)} vs {len(computed)} items"]
        return [d for i, (a, b) in enumerate(zip(shipped, computed)) for d in close(a, b, f"{path}[{i}]")]
    if isinstance(shipped, (np.ndarray, np.generic)) or isinstance(shipped, float):
        a, b = np.asarray(shipped), np.asarray(computed)
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{path}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"]
        if a.dtype.kind in "iub":
            return [] if np.array_equal(a, b) else [f"{path}: differs"]
        gap = float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
        scale = float(np.nanmax(np.abs(b.astype(np.float64)), initial=0.0))
        return [] if gap <= 2e-5 + 5e-5 * scale else [f"{path}: differs by up to {gap:.2g} (largest value {scale:.3g})"]
    return [] if shipped == computed else [f"{path}: {shipped!r} vs {computed!r}"]


@pytest.mark.slow  # an analysis of the bundled model each: a few seconds of CPU
@pytest.mark.parametrize("prompt", PRESETS, ids=[e["name"] for e in EXAMPLES])
def test_the_shipped_records_match_what_the_engine_computes(bundled_f32, prompt):
    engine = engine_with(bundled_f32)  # no store: computed now
    shipped = Store(None, 1 << 30, [SHIPPED])
    ident = identity.identify(BUNDLED, Settings(device="cpu"))
    asked = stored.analysis(BUNDLED, prompt)
    record = shipped.get(StoreKey(asked.kind, ident, asked.texts, asked.options), stored.TYPES[asked.kind])
    remake = "python -m attn warm --store attn/shipped --exact --no-ablate"
    assert record is not None, f"no shipped analysis: run {remake}"
    differences = close(record, engine.analyze(prompt, BUNDLED))
    assert differences == [], f"the shipped analysis is stale ({remake}): " + "; ".join(differences[:10])


def run_warm(*args: str, store: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "ATTN_STORE_DIR")}
    env.update(HF_HUB_OFFLINE="1", ATTN_DEVICE="cpu")
    return subprocess.run([sys.executable, "-m", "attn", "warm", "--store", str(store), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # loads the model in a new process (20-50 s)
def test_warm_computes_prompts_into_the_store_with_progress_and_skips_what_it_has(tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["The cat sat on the", {"prompt": "Water is"}]))
    done = run_warm(str(prompts), "--no-ablate", store=tmp_path / "store")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1/2] analysis of 'The cat sat on the': computed" in done.stderr
    assert "[2/2] analysis of 'Water is': computed" in done.stderr
    assert len(list((tmp_path / "store" / "records").iterdir())) == 2
    again = run_warm(str(prompts), "--no-ablate", store=tmp_path / "store")
    assert again.returncode == 0 and again.stderr.count("already stored") == 2, again.stderr[-3000:]


@pytest.mark.parametrize("content, message", [
    (None, "No such file"), ("{}", "expected a JSON list"), ('["ok", ""]', "non-empty text"), ("[1", "Expecting"),
], ids=["missing", "not-a-list", "empty-prompt", "bad-json"])
def test_warm_refuses_a_bad_prompts_file_before_loading_anything(tmp_path, content, message):
    prompts = tmp_path / "prompts.json"
    if content is not None:
        prompts.write_text(content)
    done = run_warm(str(prompts), store=tmp_path / "store")
    assert done.returncode == 2 and message in done.stderr and "Loading" not in done.stderr
    assert not (tmp_path / "store").exists()
