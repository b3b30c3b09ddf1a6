"""The web page: the only part of attn that imports gradio or spaces."""
