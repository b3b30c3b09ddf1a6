"""The web page: the only part of attn that imports gradio or spaces.

layout (the components, named by `Ui`), handlers (the events: {component: value}), api (the
gr.api endpoints), page (the Blocks: layout, events and API wired), subject (what a visitor
was shown, held in the session), link (deep links), gpu (spaces.GPU).
"""
