"""Everything the environment configures, read once (`Settings.from_env`) and passed down.

No other module of the demo reads the environment (tests/test_imports.py checks it): the
engine, the loaders and the page get their settings as arguments, so a test builds the
app from `Settings(...)` without touching os.environ. docs/configuration.md has the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from attn.model.registry import BUNDLED, REGISTRY

HUB_MODEL = "gemma-3-1b"  # the lab's model, the default where a token can load it
MAX_TOKENS = 2048  # longest prompt, with <BOS>
GPU_MODELS = (HUB_MODEL,)  # on ZeroGPU, the models whose calls take a GPU; the others run on the Space's CPU


def switch_on(value: str | None) -> bool:
    """An environment switch read as `spaces` reads SPACES_ZERO_GPU (spaces/config.py): 1, t or
    true, in any case. Anything else is off, so that `false` cannot put weights on cuda while
    spaces.GPU does nothing."""
    return value is not None and value.lower() in ("1", "t", "true")


def quiet_forks(env: MutableMapping[str, str] | None = None) -> None:
    """Before the first fork (spaces.GPU forks a worker per GPU): tokenizers' own thread pool
    off, so that a fork after a tokenizer was used prints no parallelism warning on every
    call. The demo encodes one prompt at a time, so the pool gains it nothing. The one write
    to the environment (tests/test_imports.py allows it here)."""
    env = os.environ if env is None else env
    env["TOKENIZERS_PARALLELISM"] = "false"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attn-demo"


@dataclass(frozen=True)
class Settings:
    cache_dir: Path = field(default_factory=lambda: default_cache_dir({}))  # the converted bundled model
    models: tuple[str, ...] = tuple(REGISTRY)  # the registry names offered, in menu order
    default_model: str = BUNDLED
    max_tokens: int = MAX_TOKENS
    cache_bytes: int = 256 << 20  # the shared analysis cache
    figure_cache_bytes: int = 64 << 20  # rendered figures
    prefetch: bool = True  # draw the likely next views in the background
    queue_size: int = 64  # requests waiting at most; more are refused
    device: str | None = None  # "cpu" or "cuda"; None: cuda where there is one
    zero_gpu: bool = False  # running on a ZeroGPU Space: the GPU models' calls go through spaces.GPU
    gpu_models: tuple[str, ...] = GPU_MODELS  # which offered models take a GPU on ZeroGPU
    hf_token: str | None = field(default=None, repr=False)  # never printed

    def __post_init__(self):
        models = tuple(m for m in self.models if m in REGISTRY) or (BUNDLED,)
        object.__setattr__(self, "models", models)
        if self.default_model not in models:
            object.__setattr__(self, "default_model", models[0])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings of this process (`env`: os.environ unless given)."""
        env = os.environ if env is None else env
        token = env.get("HF_TOKEN") or None
        models = tuple(m for m in (env.get("ATTN_MODELS") or "").split(",") if m) or tuple(REGISTRY)
        return cls(
            cache_dir=Path(env["ATTN_CACHE_DIR"]).expanduser() if env.get("ATTN_CACHE_DIR") else default_cache_dir(env),
            models=models,
            default_model=env.get("ATTN_DEFAULT_MODEL") or (HUB_MODEL if token else BUNDLED),
            max_tokens=int(env.get("ATTN_MAX_TOKENS") or MAX_TOKENS),
            cache_bytes=int(env.get("ATTN_CACHE_BYTES") or 256 << 20),
            figure_cache_bytes=int(env.get("ATTN_FIGURE_CACHE_BYTES") or 64 << 20),
            prefetch=env.get("ATTN_PREFETCH", "1") != "0",
            queue_size=int(env.get("ATTN_QUEUE_SIZE") or 64),
            device=env.get("ATTN_DEVICE") or None,
            zero_gpu=switch_on(env.get("SPACES_ZERO_GPU")),
            gpu_models=tuple(m for m in (env.get("ATTN_GPU_MODELS") or "").split(",") if m) or GPU_MODELS,
            hf_token=token,
        )

    def uses_gpu(self, name: str) -> bool:
        """Whether `name`'s calls take a ZeroGPU GPU (through spaces.GPU, in a forked worker);
        off ZeroGPU, and for the other models, they run in this process."""
        return self.zero_gpu and name in self.gpu_models

    @property
    def loads_at_start(self) -> list[str]:
        """The models loaded when the app starts: the default one (after the server is
        up), and on ZeroGPU every offered model (the GPU ones placed on cuda while the app
        is built, in the main thread, as ZeroGPU wants; the others after the server is up)."""
        return list(self.models) if self.zero_gpu else [self.default_model]
