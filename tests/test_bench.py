"""The GPU sizing script runs its whole path (build, save, load_spec, engine, timings)
on the CPU with small shapes, so it still works on the day a GPU is lent."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest

import attn.model.loading as models
import attn.model.registry as registry
from attn.compute.duration import gpu_seconds
from attn.compute.forward import analyze
from attn.compute.jobs import Work
from bench.gpu import GEMMA_3_1B, GEMMA_3_1B_PARAMS, TINY, build_checkpoint, tokenizer_dir
from bench.prompts import ARTIST
from conftest import ROOT
from helpers import SETTINGS, engine_with


def test_the_sizing_model_has_gemma_3_1b_s_published_size_and_layer_pattern():
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    with torch.device("meta"):  # shapes only, no memory
        model = Gemma3ForCausalLM(Gemma3TextConfig(**GEMMA_3_1B))
    assert sum(p.numel() for p in model.parameters()) == GEMMA_3_1B_PARAMS
    assert [i for i, t in enumerate(model.config.layer_types) if t == "full_attention"] == [5, 11, 17, 23]


@pytest.mark.slow
def test_the_gpu_sizing_script_runs_end_to_end_on_the_cpu_with_tiny_shapes(bundled, tmp_path, on_cpu):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "ATTN_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["dtype"], result["attn_device"]) == ("float32", "cpu")
    sizes = result["sizes"]
    assert [s.get("error") for s in sizes] == [None] * 3
    assert sizes[0]["tokens"] == 37 and sizes[-1]["tokens"] > 512  # past the sliding window
    measured = ["analysis_s", "bare_s", "integrity_check_s", "sdpa_no_weights_s", "analysis_mib"]
    for i, s in enumerate(sizes):
        first = "first_call_s" if i == 0 else "first_at_size_s"
        for name in [first, *measured]:
            assert isinstance(s[name], float) and math.isfinite(s[name]) and s[name] > 0, (name, s)
        assert 0 < s["integrity_check_s"] < s["analysis_s"]
        assert math.isclose(s["ratio_analysis_vs_bare"], s["analysis_s"] / s["bare_s"])
        assert (s["peak_gib_analysis"], s["peak_gib_bare"]) == (None, None)  # no CUDA here
    # The script analysed what the app's own path gives for the same checkpoint: the same seed
    # builds the same random weights here, and this process's analysis predicts the same token.
    ckpt = tmp_path / "ckpt"
    build_checkpoint(TINY, tokenizer_dir(None), str(ckpt), "cpu")
    loaded = models.load_spec(replace(registry.REGISTRY["gemma-3-1b"], hf_id=str(ckpt)), SETTINGS, lambda msg: None)
    assert sizes[0]["next_token"] == analyze(loaded, ARTIST).next_token
    # Same weights in float32 both ways on the CPU: the comparison must find no drift.
    drift = result["served_vs_float32"]
    assert drift["dtype"] == "float32" and drift["max_abs"] == 0 and drift["same_next_token"]
    # A cold and a warm call of each kind a GPU call can be, each with what the app requests for it.
    kinds = result["kinds"]
    assert set(kinds) == {"forward", "ablation", "generate", "compare"}
    for kind, row in kinds.items():
        assert 0 < row["warm_s"] and 0 < row["cold_s"] and row["tokens"] > 0, (kind, row)
        assert row["requested_s"] == gpu_seconds(Work(kind, row["tokens"], row["steps"]))
    assert kinds["generate"]["steps"] == 4 and kinds["ablation"]["tokens"] > kinds["forward"]["tokens"]
    assert set(result["suggested_constants"]) == {"COLD_S", "TOKEN_S", "STEP_S"}
    assert "suggested constants for attn/compute/duration.py" in proc.stdout


@pytest.mark.slow  # builds the page, forks workers: half a minute
def test_the_class_simulation_asks_the_gpu_nothing_for_stored_or_270m_work(bundled, tmp_path):
    out = tmp_path / "class.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "classroom.py"), "--visitors", "9", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["actions"] == 27 and result["gpu_calls_for_stored_or_270m_work"] == 0
    table = result["table"]
    assert table["1B, preset"]["gpu_calls"] >= 1 and table["270M, typed"]["gpu_calls"] == 0
    assert result["stats"]["gpu_calls"] == sum(row["gpu_calls"] for row in table.values())
    assert "GPU calls for stored or 270M work: 0" in proc.stdout


@pytest.mark.slow
def test_the_profiles_benchmark_times_both_ways_and_sizes_the_memory(bundled):
    """bench/profiles.py's whole path, short: the timed pairs and the fresh-process memory."""
    env = {**os.environ, "ATTN_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "profiles.py"), "--reps", "2", "--sizes", "37",
                           "--memory-runs", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert "analysis at 37 tokens, with profiles vs without" in proc.stdout, proc.stderr[-3000:]
    assert re.search(r"peak RSS at 2048 tokens, load \+ analysis, with profiles vs without: [\d,.]+ MiB", proc.stdout)


def test_the_benchmark_s_profiles_phase_puts_its_target_in_the_table(bundled):
    """bench/benchmark.py's phase 8: a paired row per size, with issue 22's target."""
    from bench.common import Report
    from bench.profiles import phase_profiles

    rep = Report()
    phase_profiles(rep, {"loaded": bundled}, [37], reps=2, memory_runs=0)
    (row,) = rep.rows
    assert row["section"] == "8 profiles" and "<= 1.1x without them" in row["target"]
    assert row["status"] in ("PASS", "FAIL") and len(rep.raw["profiles.37"]["ratios"]) == 2


@pytest.mark.app
def test_the_profiles_phase_times_the_analyze_endpoint_with_and_without_them(bundled):
    """Phase 8's /analyze row: Api.analyze on new prompts, the profiles switched off for one side
    of each pair (api_pairs checks each answer has them or not)."""
    import app
    from bench.common import Report
    from bench.profiles import phase_profiles

    page = app.create_page(replace(SETTINGS, store_dir=None, prefetch=False), engine=engine_with(bundled))
    rep = Report()
    phase_profiles(rep, {"loaded": bundled, "page": page}, [], reps=2, memory_runs=0)
    (row,) = rep.rows
    assert "/analyze as the server runs it" in row["target"] and row["status"] in ("PASS", "FAIL")
    assert len(rep.raw["profiles.api"]["ratios"]) == 2
