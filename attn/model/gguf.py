"""Gemma 3's GGUF turned into a transformers checkpoint directly, in seconds.

transformers' own GGUF loading takes about a minute here: `gguf.GGUFReader` parses the
262,144-entry vocabulary field by field (~10 s, done twice: config and weights), and the
tokenizer converter re-derives the BPE merges with two full sorts and then builds and
serialises a Rust tokenizer (~20 s). This module does the same conversion for the one
file we ship: a small reader for just the metadata and tensor table, dequantization by
`gguf.quants`' own block arithmetic on large slices (two threads, overlapping the
tokenizer), and the tokenizer written as tokenizer.json text without building it
(attn/model/gguf_tokenizer.py). The result equals the transformers conversion (weights
bit for bit, same config, same tokenizer.json); tests/test_convert.py checks that against
transformers itself.
"""

from __future__ import annotations

import json
import mmap
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from attn.model.gguf_tokenizer import tokenizer_files

Progress = Callable[[str], None]

ARCHITECTURE = "gemma3"

# GGUF metadata value types whose width is fixed: type id -> struct format
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# GGUF tensor name (after "blk.N.") -> transformers' name (after "model.layers.N.")
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]  # torch order (GGUF stores the fastest dimension first)
    ggml_type: int
    start: int  # absolute offset in the file


@dataclass
class Gguf:
    """A GGUF file's metadata and tensor table, over a read-only memory map of it."""

    metadata: dict
    tensors: list[Tensor]
    data: mmap.mmap

    def close(self) -> None:
        self.data.close()


def read_gguf(path: Path) -> Gguf:
    """Parse the header. String arrays (the vocabulary) are decoded with one bytes
    slice per entry; numeric arrays become numpy arrays without a Python loop."""
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    version, tensor_count, kv_count = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise ValueError(f"{path} is GGUF version {version}; only 2 and 3 are read")
    pos = 24
    metadata = {}
    for _ in range(kv_count):
        key, pos = _string(data, pos)
        (kind,) = struct.unpack_from("<I", data, pos)
        metadata[key], pos = _value(data, pos + 4, kind)
    entries = []
    for _ in range(tensor_count):
        name, pos = _string(data, pos)
        (ndim,) = struct.unpack_from("<I", data, pos)
        dims = struct.unpack_from(f"<{ndim}Q", data, pos + 4)
        ggml_type, offset = struct.unpack_from("<IQ", data, pos + 4 + 8 * ndim)
        pos += 4 + 8 * ndim + 12
        entries.append((name, tuple(reversed(dims)), ggml_type, offset))
    alignment = metadata.get("general.alignment", 32)
    base = -(-pos // alignment) * alignment
    tensors = [Tensor(name, shape, kind, base + offset) for name, shape, kind, offset in entries]
    return Gguf(metadata, tensors, data)


def _string(data, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", data, pos)
    end = pos + 8 + n
    return data[pos + 8 : end].decode("utf-8"), end


def _value(data, pos: int, kind: int):
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack_from(fmt, data, pos)[0], pos + struct.calcsize(fmt)
    if kind == _STRING:
        return _string(data, pos)
    if kind != _ARRAY:
        raise ValueError(f"unknown GGUF metadata type {kind}")
    item, count = struct.unpack_from("<IQ", data, pos)
    pos += 12
    if item in _SCALARS:
        dtype = np.dtype(_SCALARS[item])
        values = np.frombuffer(data, dtype=dtype, count=count, offset=pos).copy()
        return values, pos + count * dtype.itemsize
    if item != _STRING:
        raise ValueError(f"unsupported GGUF array of type {item}")
    values = []
    append = values.append
    unpack = struct.Struct("<Q").unpack_from
    for _ in range(count):
        (n,) = unpack(data, pos)
        pos += 8
        append(data[pos : pos + n].decode("utf-8"))
        pos += n
    return values, pos


# ---- config ---------------------------------------------------------------------------


def config(gguf: Gguf):
    """The Gemma3TextConfig transformers derives from this file's metadata."""
    from transformers import Gemma3TextConfig

    md = gguf.metadata
    if md.get("general.architecture") != ARCHITECTURE:
        raise ValueError(f"expected a {ARCHITECTURE} GGUF, got {md.get('general.architecture')!r}")

    def key(name: str):
        return md[f"{ARCHITECTURE}.{name}"]

    cfg = Gemma3TextConfig(
        vocab_size=md.get(f"{ARCHITECTURE}.vocab_size", len(md["tokenizer.ggml.tokens"])),
        max_position_embeddings=key("context_length"),
        num_hidden_layers=key("block_count"),
        intermediate_size=key("feed_forward_length"),
        hidden_size=key("embedding_length"),
        head_dim=key("attention.key_length"),
        num_attention_heads=key("attention.head_count"),
        num_key_value_heads=key("attention.head_count_kv"),
        rms_norm_eps=key("attention.layer_norm_rms_epsilon"),
        sliding_window=key("attention.sliding_window"),
        rope_theta=key("rope.freq_base"),
        tie_word_embeddings=all(t.name != "output.weight" for t in gguf.tensors),
        bos_token_id=md.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=md.get("tokenizer.ggml.eos_token_id"),
        unk_token_id=md.get("tokenizer.ggml.unknown_token_id"),
        pad_token_id=md.get("tokenizer.ggml.padding_token_id"),
        _model_name_or_path=md.get("general.name"),  # kept as transformers keeps it
    )
    cfg.architectures = ["Gemma3ForCausalLM"]
    cfg.dtype = "float32"
    return cfg


# ---- weights ---------------------------------------------------------------------------


def hf_name(gguf_name: str) -> str:
    """transformers' parameter name for a Gemma 3 GGUF tensor name."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _TOP_TENSORS:
        return f"{_TOP_TENSORS[stem]}.{suffix}"
    blk, layer, part = stem.split(".", 2)
    if blk != "blk" or part not in _LAYER_TENSORS:
        raise ValueError(f"unexpected tensor {gguf_name!r} in a Gemma 3 GGUF")
    return f"model.layers.{int(layer)}.{_LAYER_TENSORS[part]}.{suffix}"


def state_dict(gguf: Gguf, workers: int = 2) -> dict:
    """Every tensor dequantized to float32 under its transformers name.

    Gemma's RMSNorm multiplies by (1 + weight); llama.cpp stores (1 + weight), so the
    norms get 1 subtracted back, in float32, as transformers does.
    """
    import torch

    def one(t: Tensor):
        values = _dequantize(gguf, t)
        if "norm.weight" in t.name:
            values = values - 1
        return hf_name(t.name), torch.from_numpy(np.array(values, dtype=np.float32))

    with ThreadPoolExecutor(workers) as pool:  # numpy releases the GIL on big arrays
        return dict(pool.map(one, gguf.tensors))


def _dequantize(gguf: Gguf, t: Tensor, rows_per_call: int = 4096) -> np.ndarray:
    """`gguf.quants`' own block arithmetic (so the values are the same to the bit), called
    on thousands of rows at a time: `gguf.quants.dequantize` works in groups of 16 rows,
    and its Python overhead then costs more than the arithmetic."""
    from gguf import quants
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    kind = GGMLQuantizationType(t.ggml_type)
    block, block_bytes = GGML_QUANT_SIZES[kind]
    rows = int(np.prod(t.shape[:-1], dtype=np.int64))
    row_bytes = t.shape[-1] // block * block_bytes
    raw = np.frombuffer(gguf.data, dtype=np.uint8, count=rows * row_bytes, offset=t.start)
    raw = raw.reshape(rows, row_bytes)
    if kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return quants.dequantize(raw, kind).reshape(t.shape)
    codec = getattr(quants, kind.name)
    parts = [codec.dequantize_rows(raw[i : i + rows_per_call]) for i in range(0, rows, rows_per_call)]
    return np.concatenate(parts).reshape(t.shape)


# ---- the whole conversion ------------------------------------------------------------------


def convert(gguf_path: Path, out: Path, progress: Progress) -> None:
    """Write config.json, generation_config.json, model.safetensors, tokenizer.json and
    tokenizer_config.json for the GGUF at `gguf_path` into the directory `out`."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    progress("Reading the GGUF header and vocabulary")
    gguf = read_gguf(gguf_path)
    try:
        cfg = config(gguf)
        progress("Dequantizing the weights and building the tokenizer")
        # The tokenizer is pure Python and the dequantization mostly numpy: they overlap.
        with ThreadPoolExecutor(1) as pool:
            tokenizer = pool.submit(tokenizer_files, gguf.metadata)
            tensors = state_dict(gguf)
            _check_names(cfg, tensors)
            progress("Saving the weights")
            save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
            del tensors
            text, settings = tokenizer.result()
    finally:
        gguf.close()
    progress("Saving the tokenizer and config")
    (out / "tokenizer.json").write_text(text, encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
    cfg.save_pretrained(out)
    GenerationConfig.from_model_config(cfg).save_pretrained(out)


def _check_names(cfg, tensors: dict) -> None:
    """Every parameter of the model filled, nothing left over (lm_head is tied)."""
    import torch
    from transformers import Gemma3ForCausalLM

    with torch.device("meta"):
        expected = set(Gemma3ForCausalLM(cfg).state_dict())
    if cfg.tie_word_embeddings:
        expected.discard("lm_head.weight")
    if expected != set(tensors):
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(f"GGUF tensors do not match Gemma 3: missing {missing[:5]}, unexpected {extra[:5]}")
