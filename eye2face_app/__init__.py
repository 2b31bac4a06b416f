"""The eye2face Gradio app, apart from its page (app.py at the repository root, as Spaces want it).

models: the models it can compare and how they load; refusals: what a person is told, and the one log line per
request; comparison: the comparison's layout and its two renderings (the PNG and the page's HTML); handlers: the
functions behind the page and its API.
"""
