"""Sizing `@spaces.GPU(duration=...)`: the Gemma 3 1B path on CUDA, bfloat16, eager attention.

    python bench/gpu.py --tokenizer DIR [--json FILE]     # on a machine with a GPU
    python bench/gpu.py --tiny                            # the same code on the CPU, small

No hub is reachable, so the script builds a random-weight Gemma3ForCausalLM with the
published google/gemma-3-1b-pt shapes (random weights cost what trained ones cost: same
shapes, same kernels), saves it as a hub-style checkpoint with the Gemma tokenizer (the
bundled model's: Gemma 3 shares one vocabulary), and loads it through the app's own path:
`attn.model.loading.load_spec` (bf16 on CUDA, eager attention, weights probed) inside an
`attn.Engine` that caches nothing, so each `analyze` runs what the app's @spaces.GPU call runs.

Measured per prompt size (the artist passage, 512 and 2048 tokens): the first call, the
median analysis (tokenize + forward + integrity check + capture to numpy), a bare eager
`model(ids, output_attentions=True)`, an sdpa forward without weights (what eager costs),
and peak GPU memory; plus load time, the host-to-GPU weight copy ZeroGPU makes when a GPU
call starts, and how far bf16 weights drift from float32 ones on the same model. Then a cold
and a warm call of each kind a GPU call can be (bench/gpu_kinds.py: an analysis, a whole
ablation, a 32-step continuation, a comparison of two new prompts, at the largest size), what
attn/compute/duration.py requests for each, and the constants those calls suggest for it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as `python bench/gpu.py`: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import gpu_kinds
from bench.prompts import ARTIST, n_tokens, sized_prompt

MODEL = "gemma-3-1b"
# google/gemma-3-1b-pt's config.json: the shapes that decide the cost.
GEMMA_3_1B = dict(
    vocab_size=262144,
    hidden_size=1152,
    intermediate_size=6912,
    num_hidden_layers=26,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=512,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
)
GEMMA_3_1B_PARAMS = 999_885_952  # the published size of Gemma 3 1B (tied embeddings)
TINY = dict(GEMMA_3_1B, hidden_size=32, intermediate_size=64, head_dim=16, query_pre_attn_scalar=16)


def now() -> float:
    return time.perf_counter()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync()
        t = now()
        fn()
        sync()
        out.append(now() - t)
    return out


def peak_gib(fn) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    sync()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync()
    return torch.cuda.max_memory_allocated() / 2**30


def tokenizer_dir(arg: str | None) -> str:
    if arg:
        return arg
    from attn.model import bundled
    from attn.settings import Settings

    directory, in_memory = bundled.ensure_checkpoint(Settings.from_env().cache_dir, print)
    if in_memory is not None:
        sys.exit("The bundled cache is read-only here: pass --tokenizer DIR.")
    return str(directory)


def build_checkpoint(shapes: dict, tok_dir: str, out_dir: str, device: str) -> None:
    """A random-weight Gemma 3 with these shapes, saved in bf16 the way the hub serves it."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(**shapes)
    with torch.device(device):
        model = Gemma3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(out_dir)
    del model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", help="a directory with the Gemma tokenizer (default: the bundled cache)")
    parser.add_argument("--tiny", action="store_true", help="small shapes and sizes: a smoke run on the CPU")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import torch
    import transformers

    from attn.compute import forward as inference
    from attn.compute.encode import encode
    from attn.compute.engine import Engine
    from attn.compute.integrity import check_integrity
    from attn.model import loading as models
    from attn.model import registry
    from attn.settings import Settings

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        sys.exit("No CUDA device: run with --tiny for a CPU smoke run.")
    device = "cuda" if cuda else "cpu"
    shapes = TINY if args.tiny else GEMMA_3_1B
    sizes = [0, 96, 600] if args.tiny else [0, 512, 2048]  # 0: the artist passage as it is
    repeats = 2 if args.tiny else args.repeats
    info = {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "shapes": shapes,
    }
    print(json.dumps(info))
    tok_dir = tokenizer_dir(args.tokenizer)
    results: dict = {"info": info, "sizes": []}

    with tempfile.TemporaryDirectory() as ckpt:
        t = now()
        build_checkpoint(shapes, tok_dir, ckpt, device)
        results["build_s"] = now() - t
        spec = replace(registry.REGISTRY[MODEL], hf_id=ckpt)
        # cache_bytes=1 caches nothing: every analyze() is a forward pass.
        settings = Settings.from_env()
        engine = Engine(loader=lambda name, progress: models.load_spec(spec, settings, progress),
                        model_names=[MODEL], cache_bytes=1)
        t = now()
        loaded = engine.model(MODEL)
        sync()
        results["load_s"] = now() - t
        results["dtype"], results["attn_device"] = loaded.dtype, loaded.device
        globals_ = [i for i, k in enumerate(loaded.layer_types) if k == "global"]
        assert globals_ == [5, 11, 17, 23], globals_
        assert (loaded.dtype, loaded.device.split(":")[0]) == (("bfloat16", "cuda") if cuda else ("float32", "cpu"))
        model = loaded.model
        results["params"] = sum(p.numel() for p in model.parameters())
        assert args.tiny or results["params"] == GEMMA_3_1B_PARAMS, results["params"]
        print(f"built in {results['build_s']:.1f} s, loaded in {results['load_s']:.1f} s "
              f"as {loaded.dtype} on {loaded.device}")

        first = True
        for size in sizes:
            try:
                prompt = sized_prompt(loaded.tokenizer, size) if size else ARTIST
                n = n_tokens(loaded.tokenizer, prompt)
                ids = torch.tensor([encode(loaded.tokenizer, prompt, 10**6)[0]], device=loaded.device)
                row = {"tokens": n}
                t = now()
                analysis = engine.analyze(prompt, MODEL)  # what the @spaces.GPU call runs
                row["first_call_s" if first else "first_at_size_s"] = now() - t
                first = False
                row["analysis_s"] = statistics.median(timed(lambda: engine.analyze(prompt, MODEL), repeats))

                def bare():
                    with torch.inference_mode():
                        model(ids, output_attentions=True)

                row["bare_s"] = statistics.median(timed(bare, repeats))
                with torch.inference_mode():
                    atts = model(ids, output_attentions=True, logits_to_keep=1).attentions

                def check(atts=atts):
                    check_integrity(atts, loaded.layer_types, loaded.sliding_window, loaded.dtype)

                row["integrity_check_s"] = statistics.median(timed(check, repeats))
                del atts, check
                model.set_attn_implementation("sdpa")

                def sdpa():
                    with torch.inference_mode():
                        model(ids, logits_to_keep=1)

                row["sdpa_no_weights_s"] = statistics.median(timed(sdpa, repeats))
                model.set_attn_implementation("eager")
                row["peak_gib_analysis"] = peak_gib(lambda: engine.analyze(prompt, MODEL))
                row["peak_gib_bare"] = peak_gib(bare)
                row["ratio_analysis_vs_bare"] = row["analysis_s"] / row["bare_s"]
                row["analysis_mib"] = analysis.nbytes / 2**20
                row["next_token"] = analysis.next_token
                results["sizes"].append(row)
                print(json.dumps(row))
            except Exception as exc:  # record it and measure the other sizes
                model.set_attn_implementation("eager")
                results["sizes"].append({"size": size, "error": f"{type(exc).__name__}: {exc}"})
                print("FAILED", size, repr(exc))

        # ZeroGPU keeps weights on the host between calls and copies them in at each call's start.
        model.to("cpu")
        sync()
        t = now()
        model.to(device)
        sync()
        results["weights_to_gpu_s"] = now() - t
        results["weights_gib"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30

        # How far are the served (bf16 on CUDA) attention weights from float32 ones of the same model?
        from transformers import AutoModelForCausalLM

        prompt = sized_prompt(loaded.tokenizer, sizes[1])
        encoded = encode(loaded.tokenizer, prompt, 10**6)
        f32 = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").to(device)
        ref = inference.forward(models.LoadedModel.wrap("f32", f32, loaded.tokenizer), prompt, encoded)
        got = engine.analyze(prompt, MODEL)
        diff = abs(got.last_row - ref.last_row)
        results["served_vs_float32"] = {
            "dtype": loaded.dtype,
            "tokens": len(encoded[0]),
            "max_abs": float(diff.max()),
            "max_rel_to_row_max": float((diff.max(axis=-1) / ref.last_row.max(axis=-1)).max()),
            "same_next_token": got.next_token_id == ref.next_token_id,
        }
        print(json.dumps(results["served_vs_float32"]))
        del f32, ref, got

        # A cold and a warm call of each kind (what a fresh or a kept ZeroGPU worker runs).
        long_prompt = sized_prompt(loaded.tokenizer, sizes[1] if args.tiny else sizes[-1])
        results.update(gpu_kinds.measure(loaded, long_prompt, "Once more: " + long_prompt, 4 if args.tiny else 32,
                                         1 if args.tiny else repeats, sync))
        results["suggested_constants"] = gpu_kinds.suggest(results)

    if len([r for r in results["sizes"] if "error" not in r]) < len(sizes):
        print("some sizes failed")
    for kind, row in results["kinds"].items():
        ratio = row["requested_s"] / row["cold_s"]
        print(f"{kind}: {row['tokens']} tokens, {row['steps']} steps: cold {row['cold_s']:.2f} s, warm "
              f"{row['warm_s']:.2f} s -> requested {row['requested_s']} s ({ratio:.1f}x cold)")
    print("suggested constants for attn/compute/duration.py:", json.dumps(results["suggested_constants"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
