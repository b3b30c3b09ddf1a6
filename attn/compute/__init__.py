"""The computation: a prompt encoded and checked (encode), one forward pass (forward) into an
Analysis (analysis) read through hooks (hooks) and checked (integrity), the measures read
from it, generation, comparison and ablation, and the engine that runs them with its bounded
caches. Returns numpy; never draws, never imports gradio."""
