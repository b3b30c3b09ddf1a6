"""`python -m attn`: the prediction, the most-attended tokens, and the JSON schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import HUNGRY, THIRSTY

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each test runs `python -m attn`, which loads the model (20-50 s)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "attn", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def thirsty_json():
    done = run_cli(THIRSTY, "--json", "-")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout), done.stderr


def test_json_to_stdout_follows_the_schema(thirsty_json):
    data, _ = thirsty_json
    assert data["schema"] == "attn-analysis/3" and data["model"] == "gemma-3-270m"
    assert data["next_token"] == " water"
    assert data["tokens"][0] == "<BOS>" and data["tokens"][4] == " thirsty"
    assert data["top_k"][0] == {"token": " water", "id": data["next_token_id"], "prob": data["top_k"][0]["prob"]}
    assert data["num_layers"] == 18 and data["num_heads"] == 4
    assert [i for i, t in enumerate(data["layer_types"]) if t == "global"] == [5, 11, 17]
    attention = data["attention"]
    assert len(attention) == 18 and all(len(layer) == 4 for layer in attention)
    for layer in attention:
        for row in layer:
            assert len(row) == len(data["tokens"]) and abs(sum(row) - 1) < 1e-4


def test_with_json_on_stdout_the_summary_goes_to_stderr(thirsty_json):
    _, stderr = thirsty_json
    assert "next token: ' water'" in stderr and "most attended" in stderr


def test_the_summary_names_the_layer_head_and_top_tokens():
    done = run_cli(THIRSTY, "--layer", "12", "--head", "max", "--top", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "layer 12, local (sliding window 512), max over heads" in out
    listed = [line for line in out.splitlines() if line.startswith("  ") and "#" in line]
    assert len(listed) == 3 and "' thirsty'" in out


def test_ablate_prints_the_table_and_adds_it_to_the_json():
    done = run_cli(THIRSTY, "--ablate", "--json", "-")
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout)
    rows = data["ablation"]
    assert [row["index"] for row in rows] == list(range(1, len(data["tokens"])))
    assert data["ablation_exhaustive"] is True
    assert "token ablation, every token deleted in turn" in done.stderr
    assert "' thirsty'" in done.stderr.split("token ablation")[1]


def test_json_to_a_file(tmp_path):
    target = tmp_path / "analysis.json"
    done = run_cli(HUNGRY, "--json", str(target))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(target.read_text(encoding="utf-8"))["tokens"][4] == " hungry"


@pytest.mark.parametrize(
    "args, message",
    [
        (("   ",), "The prompt is empty"),
        ((THIRSTY, "--layer", "40"), "Layer 40 is out of range: this model has layers 0-17."),
        ((THIRSTY, "--head", "9"), "Head 9 is out of range"),
    ],
    ids=["blank", "layer", "head"],
)
def test_bad_input_exits_2_with_a_clear_message(args, message):
    done = run_cli(*args)
    assert done.returncode == 2
    assert f"error: {message}" in done.stderr
