"""Loading a registry model: always eager attention, probed at load.

`LoadedModel.wrap` accepts any transformers causal LM that runs with eager attention,
which is how the tests drive tiny random-weight models.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from attn.errors import ModelUnavailableError
from attn.model.registry import ModelSpec, get_spec
from attn.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready for analysis: weights, tokenizer, and the facts the views need."""

    name: str
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    source: str = ""
    layer_types: list[str] = field(default_factory=list)  # "global" | "local"
    sliding_window: int | None = None
    default_layer: int = 0

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @classmethod
    def wrap(cls, name: str, model, tokenizer, *, source: str = "", default_layer: int = 0):
        """Adopt any causal LM: force eager attention and check that weights come back."""
        model.eval()
        model.set_attn_implementation("eager")
        config = model.config
        layer_types = config_layer_types(config)
        window = getattr(config, "sliding_window", None) if "local" in layer_types else None
        param = next(model.parameters())
        loaded = cls(
            name=name,
            model=model,
            tokenizer=tokenizer,
            device=str(param.device),
            dtype=str(param.dtype).removeprefix("torch."),
            source=source or getattr(config, "_name_or_path", ""),
            layer_types=layer_types,
            sliding_window=int(window) if window else None,
            default_layer=min(max(default_layer, 0), len(layer_types) - 1),
        )
        _probe_attention(loaded)
        return loaded


def config_layer_types(config) -> list[str]:
    """'global' or 'local' per layer, from the config's own layer pattern."""
    n = int(config.num_hidden_layers)
    types = getattr(config, "layer_types", None)
    if getattr(config, "sliding_window", None) is None or not getattr(config, "use_sliding_window", True):
        return ["global"] * n
    if not types:  # e.g. Mistral: one window for every layer
        return ["local"] * n
    return ["local" if "sliding" in str(t) else "global" for t in types]


def _probe_attention(loaded: LoadedModel) -> None:
    """Fail at load, not at the first user request, if attention weights do not come back."""
    import torch

    tok = loaded.tokenizer
    ids = [i for i in (tok.bos_token_id,) if i is not None] + tok.encode("probe", add_special_tokens=False)
    with torch.no_grad():
        out = loaded.model(torch.tensor([ids], device=loaded.device), output_attentions=True)
    atts = getattr(out, "attentions", None)
    if not atts or any(a is None for a in atts) or len(atts) != loaded.num_layers:
        raise ModelUnavailableError(
            f"Model {loaded.name!r} does not return attention weights with eager attention."
        )


def pick_device(settings: Settings, name: str | None = None) -> tuple[str, Any]:
    """cuda in bfloat16 where there is a GPU (Gemma 3 breaks in float16), else CPU float32.
    On ZeroGPU a GPU comes with each @spaces.GPU call: cuda for the GPU models (`name` None:
    one of them), the Space's CPU for the others."""
    import torch

    if settings.device:
        device = settings.device
    elif settings.zero_gpu:
        device = "cuda" if name is None or settings.uses_gpu(name) else "cpu"
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return device, dtype


Progress = Callable[[str], None]


def load(name: str, settings: Settings, progress: Progress = log.info) -> LoadedModel:
    """Load a registry model by name. Raises UnknownModelError or ModelUnavailableError."""
    return load_spec(get_spec(name), settings, progress)


def load_spec(spec: ModelSpec, settings: Settings, progress: Progress = log.info) -> LoadedModel:
    device, dtype = pick_device(settings, spec.name)
    if spec.source == "bundled":
        model, tokenizer = _load_bundled(settings.cache_dir, progress, dtype)
    else:
        model, tokenizer = _load_hub(spec, settings.hf_token, progress, dtype)
    # Probed before the move: on ZeroGPU the main process places weights on cuda but
    # must not run CUDA (only a @spaces.GPU worker may).
    loaded = LoadedModel.wrap(
        spec.name, model, tokenizer, source=spec.hf_id or "bundled GGUF", default_layer=spec.default_layer
    )
    model.to(device)
    loaded.device = str(next(model.parameters()).device)  # where the weights say they are: "cuda:0" on a GPU
    progress(f"Loaded {spec.label} on {device}")
    return loaded


def _load_bundled(cache_dir, progress: Progress, dtype):
    # Imported before the cache is checked (4-7 s here): when another process is converting,
    # this waits on it meanwhile instead of after.
    import transformers  # noqa: F401 - imported for its time, not its names
    from transformers import Gemma3ForCausalLM  # noqa: F401 - the same

    from attn.model import bundled

    directory, in_memory = bundled.ensure_checkpoint(cache_dir, progress)
    if in_memory is not None:
        model, tokenizer = in_memory
        return model.to(dtype), tokenizer
    progress("Loading the bundled model from the cache")
    return bundled.load(directory, dtype)


def _load_hub(spec: ModelSpec, token: str | None, progress: Progress, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.needs_token and not token and not os.path.isdir(spec.hf_id or ""):
        raise ModelUnavailableError(
            f"{spec.label} is gated: set the HF_TOKEN secret (a token whose account accepted "
            "the Gemma licence) to use it."
        )
    progress(f"Loading {spec.hf_id}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.hf_id, token=token)
        model = AutoModelForCausalLM.from_pretrained(
            spec.hf_id, token=token, dtype=dtype, attn_implementation="eager"
        )
    except Exception as exc:
        # Never echo the token; the hub's own messages do not contain it.
        reason = (str(exc).splitlines() or [""])[0]
        if token:
            reason = reason.replace(token, "***")
        raise ModelUnavailableError(
            f"{spec.label} could not be loaded from {spec.hf_id}: {type(exc).__name__}: {reason}"
        ) from exc
    return model, tokenizer
