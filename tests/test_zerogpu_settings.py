"""ZeroGPU without the platform: the duration each GPU call asks for, the switch read as spaces
reads it, and which models take a GPU. (Through the platform: tests/test_zerogpu.py.)

A call's request, not its use, is what ZeroGPU checks against the visitor's quota left and
what decides how soon it leaves the queue; a call that runs past it may be aborted. So the
estimate grows with the work, never falls under a measured call times the margin, and is
capped.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from spaces.config import boolean as spaces_reads

from attn.compute import ablation, duration
from attn.compute.duration import gpu_seconds
from attn.compute.jobs import Work, work_of
from attn.model import loading
from attn.model.registry import BUNDLED
from attn.settings import HUB_MODEL, Settings, quiet_forks
from helpers import ROOT, SETTINGS

KINDS = ["forward", "ablation", "generate", "compare", "unembed"]
TOKENS = [1, 37, 512, 2048, 32 * 2047, 10**6]


# ---- the duration ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_request_grows_with_the_tokens(kind):
    asked = [gpu_seconds(Work(kind, n)) for n in TOKENS]
    assert asked == sorted(asked)
    assert asked[-1] > asked[0]


@pytest.mark.parametrize("tokens", [37, 2048])
def test_the_request_grows_with_the_steps(tokens):
    asked = [gpu_seconds(Work("generate", tokens, steps)) for steps in (1, 8, 16, 32)]
    assert asked == sorted(asked) and asked[-1] > asked[0]


@pytest.mark.parametrize("work", [Work("forward", 10**9), Work("generate", 10**6, 10**4), Work("ablation", 2**40)])
def test_the_request_is_never_above_the_cap(work):
    assert gpu_seconds(work) == duration.CAP_S


def test_the_request_is_whole_seconds_because_spaces_drops_a_fraction():
    """spaces reads a duration as timedelta(seconds=d).seconds: 9.9 would ask for 9."""
    assert all(isinstance(gpu_seconds(Work(kind, n)), int) for kind in KINDS for n in TOKENS)


def measured_calls() -> list[tuple[Work, float]]:
    """(work, seconds) of every call bench/gpu.py measured on a GPU (bench/gpu-*.json), cold:
    with the weights copied in and the first call's start-up, as a fresh worker pays them."""
    calls = []
    for path in sorted((ROOT / "bench").glob("gpu-*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        for kind, row in result.get("kinds", {}).items():  # a cold and a warm call per kind
            calls.append((Work(kind, row["tokens"], row.get("steps", 0)), row["cold_s"]))
        for row in result["sizes"]:  # analyses by size: their first call, plus the weights' copy
            first = row.get("first_call_s", row.get("first_at_size_s", 0.0))
            calls.append((Work("forward", row["tokens"]), result["weights_to_gpu_s"] + first + row["analysis_s"]))
    return calls


def test_there_are_measured_calls_to_check_against():
    assert measured_calls()


@pytest.mark.parametrize("work, seconds", measured_calls(), ids=lambda x: getattr(x, "kind", None))
def test_the_request_is_never_below_a_measured_call_times_the_margin(work, seconds):
    assert gpu_seconds(work) >= duration.MARGIN * seconds


# ---- a call's work, from its arguments -------------------------------------------------------


def test_a_calls_work_counts_every_token_it_runs_through_the_model():
    ids = list(range(40))
    encoded = (ids, ["t"] * 40, [(0, 0)] * 40)
    assert work_of("forward", "prompt", encoded) == Work("forward", 40)
    assert work_of("ablation", ids, [1, 2, 3], 7) == Work("ablation", 3 * 39)  # three deletions of 39 tokens
    continuation = type("C", (), {"max_new_tokens": 8})()
    assert work_of("generate", "prompt", encoded, continuation) == Work("generate", 40, 8)
    assert work_of("compare", ("a", encoded), ("b", encoded)) == Work("compare", 80)
    assert work_of("compare", object(), ("b", encoded)) == Work("compare", 40)  # A's analysis was cached


# ---- an ablation's batches, sized to the device -------------------------------------------------


def gemma_3_1b_on_a_gpu():
    """Gemma 3 1B's shapes in bfloat16 (no memory: on the meta device), as if on cuda."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from bench.gpu import GEMMA_3_1B

    with torch.device("meta"):
        model = Gemma3ForCausalLM(Gemma3TextConfig(**GEMMA_3_1B)).to(torch.bfloat16)
    return loading.LoadedModel(HUB_MODEL, model, None, device="cuda:0", dtype="bfloat16",
                               layer_types=["local"] * 26)


def rows_per_batch(monkeypatch, free_gib: float, n_ids: int = 2048) -> int:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *args: (int(free_gib * 2**30), 80 * 2**30))
    return ablation.device_batch_tokens(gemma_3_1b_on_a_gpu(), n_ids) // (n_ids - 1)


def test_on_the_cpu_an_ablation_batch_is_the_cpus(bundled_f32):
    assert ablation.device_batch_tokens(bundled_f32, 2048) == ablation.BATCH_TOKENS


def test_on_a_zerogpu_slice_every_deletion_of_a_2048_token_prompt_fits_one_batch(monkeypatch):
    assert rows_per_batch(monkeypatch, free_gib=69) >= ablation.MOST_ATTENDED


def test_less_free_gpu_memory_means_smaller_batches_never_none(monkeypatch):
    rows = [rows_per_batch(monkeypatch, gib) for gib in (70, 16, 4, 1, 0.01)]
    assert rows == sorted(rows, reverse=True) and rows[0] > rows[2] and rows[-1] == 1


# ---- the switch and the models on the GPU -------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "t", "true", "True", "TRUE", "T", "0", "false", "False", "no", "yes", "on"])
def test_spaces_zero_gpu_is_read_exactly_as_spaces_reads_it(value):
    assert Settings.from_env({"SPACES_ZERO_GPU": value}).zero_gpu is spaces_reads(value)


def test_only_gemma_3_1b_takes_a_gpu_by_default():
    on = Settings.from_env({"SPACES_ZERO_GPU": "true"})
    assert on.gpu_models == (HUB_MODEL,)
    assert on.uses_gpu(HUB_MODEL) and not on.uses_gpu(BUNDLED)


def test_which_models_take_a_gpu_is_a_setting():
    both = Settings.from_env({"SPACES_ZERO_GPU": "1", "ATTN_GPU_MODELS": f"{HUB_MODEL},{BUNDLED}"})
    assert both.uses_gpu(HUB_MODEL) and both.uses_gpu(BUNDLED)


def test_off_zerogpu_no_model_takes_a_gpu():
    off = Settings.from_env({"ATTN_GPU_MODELS": f"{HUB_MODEL},{BUNDLED}"})
    assert not off.uses_gpu(HUB_MODEL) and not off.uses_gpu(BUNDLED)


def test_on_zerogpu_the_bundled_model_stays_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # spaces says so in the main process
    on = replace(SETTINGS, device=None, zero_gpu=True)
    assert loading.pick_device(on, BUNDLED) == ("cpu", torch.float32)
    assert loading.pick_device(on, HUB_MODEL) == ("cuda", torch.bfloat16)


def test_tokenizers_parallelism_is_switched_off_before_any_fork():
    env = {}
    quiet_forks(env)
    assert env == {"TOKENIZERS_PARALLELISM": "false"}
