"""The fast GGUF conversion (attn/model/gguf.py) equals transformers' own GGUF loading.

The reference is transformers' loader run on the same bundled GGUF (about a minute, once
per module): the weights must be equal bit for bit, the config and tokenizer.json the same,
the tokenizer must encode and decode every kind of text identically, and the analysis of
the lab's presets must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import attn.model.bundled as ckpt
from attn.compute.forward import analyze
from attn.model import gguf as convert
from attn.model.loading import LoadedModel
from helpers import PRESETS

# The reference (transformers' GGUF loading) takes about a minute and the conversion with its
# tokenizer loads half a minute more of CPU: every test here waits for one or both.
pytestmark = pytest.mark.slow

TEXTS = PRESETS + [
    "Emoji 🔎🙂‍↔️👩🏽‍💻 and flags 🇳🇬",
    "日本語のテキストと中文文本，还有한국어",
    "  leading, trailing   and\tmixed \n\n whitespace   ",
    "<bos> typed as text, <start_of_turn>user and <eos>",
    "Byte fallback: \x00\x07 \u0300 \U0001f9ff \U000e0041",
    "ﬁ ligature, Ünïcödé, ‏עברית‏ and العربية",
]


def transformers_reference(gguf: Path):
    """transformers' own GGUF loading: the slow path attn/model/gguf.py replaces."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    return model, tokenizer


@pytest.fixture(scope="module")
def gguf(tmp_path_factory) -> Path:
    pkg = ckpt._gguf_module()
    return pkg.assemble(tmp_path_factory.mktemp("gguf") / pkg.MODEL_NAME, overwrite=True)


@pytest.fixture(scope="module")
def reference(gguf):
    return transformers_reference(gguf)


@pytest.fixture(scope="module")
def converted(gguf, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted")
    convert.convert(gguf, out, lambda message: None)
    return out


@pytest.fixture(scope="module")
def fast(converted):
    import torch

    return ckpt.load(converted, torch.float32)


@pytest.fixture(scope="module")
def auto(converted):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(converted))


def test_the_weights_equal_transformers_bit_for_bit(reference, fast):
    import torch

    ours, theirs = fast[0].state_dict(), reference[0].state_dict()
    assert sorted(ours) == sorted(theirs)
    unequal = [k for k in theirs if ours[k].dtype != theirs[k].dtype or not torch.equal(ours[k], theirs[k])]
    assert unequal == []


def test_the_config_equals_transformers(reference, fast):
    # `architectures` is filled in by save_pretrained, which the reference has not run.
    ignore = {"quantization_config", "transformers_version", "_commit_hash", "_name_or_path", "architectures"}
    ours = {k: v for k, v in fast[0].config.to_dict().items() if k not in ignore}
    theirs = {k: v for k, v in reference[0].config.to_dict().items() if k not in ignore}
    assert ours == theirs
    assert fast[0].config.architectures == ["Gemma3ForCausalLM"]


def test_the_tokenizer_json_equals_transformers(reference, converted):
    ours = json.loads((converted / "tokenizer.json").read_text(encoding="utf-8"))
    assert ours == json.loads(reference[1].backend_tokenizer.to_str())


def test_the_converted_files_load_with_auto_classes(converted, auto):
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(str(converted)).model_type == "gemma3_text"
    assert type(auto).__name__ == "GemmaTokenizer"


def encodings(tokenizer, text: str):
    plain = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    ids = plain["input_ids"]
    return {
        "ids": ids,
        "offsets": plain["offset_mapping"],
        "with_bos": tokenizer(text)["input_ids"],
        "specials_kept": tokenizer(text, add_special_tokens=False)["input_ids"],
        "tokens": tokenizer.convert_ids_to_tokens(ids),
        "decoded": tokenizer.decode(ids),
        "pieces": tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False),
    }


@pytest.mark.parametrize("text", TEXTS)
def test_the_tokenizer_encodes_and_decodes_like_transformers(reference, fast, text):
    assert encodings(fast[1], text) == encodings(reference[1], text)


def test_the_tokenizer_has_the_same_special_tokens(reference, fast, auto):
    def facts(tok):
        return (len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id,
                tok.mask_token, tok.all_special_ids)

    assert facts(fast[1]) == facts(reference[1])
    assert facts(fast[1]) == facts(auto)


@pytest.mark.parametrize("text", TEXTS)
def test_the_cache_loader_tokenizer_matches_auto_tokenizer(fast, auto, text):
    assert encodings(fast[1], text) == encodings(auto, text)


@pytest.mark.parametrize("prompt", PRESETS)
def test_the_presets_analyse_the_same(reference, fast, prompt):
    ours = analyze(LoadedModel.wrap("fast", *fast), prompt)
    theirs = analyze(LoadedModel.wrap("reference", *reference), prompt)
    assert ours.tokens == theirs.tokens and ours.spans == theirs.spans
    assert ours.next_token_id == theirs.next_token_id
    np.testing.assert_allclose(ours.last_row, theirs.last_row, rtol=0, atol=1e-6)
    assert [t.id for t in ours.top_k] == [t.id for t in theirs.top_k]
