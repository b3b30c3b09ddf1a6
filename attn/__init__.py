"""Attention engine: prompt -> Analysis (numbers) -> views. Never imports gradio."""

from attn.compute.ablation import Ablation, Deletion
from attn.compute.analysis import SCHEMA, Analysis, LensLayer, TokenProb
from attn.compute.engine import Engine
from attn.errors import (
    AnalysisFailedError,
    AttnError,
    IntegrityError,
    ModelUnavailableError,
    PromptError,
    UnknownModelError,
    ViewError,
)
from attn.model.loading import LoadedModel
from attn.model.registry import BUNDLED, REGISTRY
from attn.views.view import BOS_MODES, View

__all__ = [
    "SCHEMA", "Ablation", "Analysis", "Deletion", "LensLayer", "TokenProb", "Engine",
    "AnalysisFailedError", "AttnError", "IntegrityError", "ModelUnavailableError", "PromptError",
    "UnknownModelError", "ViewError", "BUNDLED", "REGISTRY", "LoadedModel", "BOS_MODES", "View",
]
