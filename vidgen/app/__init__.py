"""``vidgen serve``: a local Gradio web page for the text-to-video pipelines (the optional ``app`` extra,
``pip install -e .[app]``).

:mod:`vidgen.app.core` checks a request against the app's limits and makes the video (no Gradio);
:mod:`vidgen.app.ui` builds the page; :mod:`vidgen.app.serve` is the command. Only the page imports Gradio, when it is
built: importing vidgen (or this package) never does.
"""
