"""Fresh child processes (`bench/benchmark.py --child-size N` / `--child-gguf`): peak RSS per
prompt size, the conversion against transformers' GGUF loader.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BUNDLED, ROOT, current_rss, maxrss_bytes, now, peak_rss, quiet_env
from bench.inprocess import bare_forward
from bench.prompts import ARTIST, n_tokens, sized_prompt


def child_main(args) -> None:
    """Runs in a fresh process: load, analyse one prompt of `size` tokens, bare forward."""
    import torch

    from attn.compute import forward as inference
    from attn.compute.encode import encode
    from attn.model import loading as models
    from attn.settings import Settings

    out: dict = {"size": args.child_size}
    t = now()
    loaded = models.load(BUNDLED, Settings.from_env(), lambda msg: None)
    out["load_s"] = now() - t
    out["rss_after_load"] = peak_rss()
    tok = loaded.tokenizer
    prompt = ARTIST if args.child_size == n_tokens(tok, ARTIST) else sized_prompt(tok, args.child_size)
    ids = encode(tok, prompt, max_tokens=10**7)[0]
    out["tokens"] = len(ids)
    max_tokens = max(4096, len(ids))

    # Warm-up on the short passage (one-time kernel set-up); negligible memory.
    with torch.inference_mode():
        loaded.model(torch.tensor([encode(tok, ARTIST)[0]]), output_attentions=True)
    out["rss_after_warmup"] = peak_rss()
    out["analyze_s"], out["bare_s"] = [], []
    analysis = None
    for r in range(args.child_reps):
        t0 = now()
        analysis = inference.analyze(loaded, prompt, max_tokens=max_tokens)
        out["analyze_s"].append(now() - t0)
        if r == 0:
            out["rss_after_analyze"] = peak_rss()  # peak of load + one analysis
            out["rss_now_after_analyze"] = current_rss()
        out["bare_s"].append(bare_forward(loaded, ids))
        if r == 0:
            out["rss_after_bare"] = peak_rss()
    out["ru_maxrss_inherited"] = maxrss_bytes()
    out["nbytes"] = analysis.nbytes
    out["full_matrices"] = analysis.full is not None
    out["prompt"] = prompt
    if args.child_pickle:
        with open(args.child_pickle, "wb") as f:
            pickle.dump(analysis, f)
    Path(args.child_out).write_text(json.dumps(out))


def gguf_child_main(args) -> None:
    """The one-time conversion two ways, in one fresh process: transformers' own GGUF
    loader (tokenizer + dequantized model; what the demo did before attn/convert.py) and
    attn.model.bundled's conversion into a checkpoint directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attn.model import bundled

    pkg = bundled._gguf_module()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        gguf = pkg.assemble(Path(tmp) / pkg.MODEL_NAME, overwrite=True)
        t = now()
        AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
        out["gguf_load_s"] = now() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = now()
        bundled._convert(Path(tmp), lambda msg: None)  # assembles the GGUF, converts, writes the files
        out["convert_s"] = now() - t
    out["peak_rss"] = peak_rss()
    Path(args.child_out).write_text(json.dumps(out))


def run_child(extra: list[str], timeout: float, tmp: Path) -> dict:
    out = tmp / f"child-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(ROOT / "bench" / "benchmark.py"), *extra, "--child-out", str(out)]
    proc = subprocess.run(cmd, cwd=str(ROOT), env=quiet_env(os.environ), timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"child {extra} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return json.loads(out.read_text())
