"""Attention engine: prompt -> Analysis (numbers) -> views. Never imports gradio."""

from .ablation import Ablation, Deletion
from .analysis import SCHEMA, Analysis, LensLayer, TokenProb
from .engine import Engine
from .errors import (
    AnalysisFailedError,
    AttnError,
    IntegrityError,
    ModelUnavailableError,
    PromptError,
    UnknownModelError,
    ViewError,
)
from .models import BUNDLED, REGISTRY, LoadedModel
from .view import BOS_MODES, View

__all__ = [
    "SCHEMA", "Ablation", "Analysis", "Deletion", "LensLayer", "TokenProb", "Engine", "AnalysisFailedError", "AttnError", "IntegrityError",
    "ModelUnavailableError", "PromptError", "UnknownModelError", "ViewError",
    "BUNDLED", "REGISTRY", "LoadedModel", "BOS_MODES", "View",
]
