"""The computation: one forward pass per prompt (forward) into an Analysis (analysis), the
measures read from it, generation, comparison and ablation, and the engine that runs them
with its bounded caches. Returns numpy; never draws, never imports gradio."""
