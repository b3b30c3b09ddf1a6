"""The model: which models are offered (registry), how one is loaded (loading), and the
bundled Gemma 3 270M, converted once from its GGUF (gguf, gguf_tokenizer) into a verified
cache (bundled)."""
