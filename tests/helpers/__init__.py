"""Shared test helpers (importable as ``helpers`` because tests/conftest.py's folder is on ``sys.path``):
``differences`` (the equality tests' measured differences), ``loss_split`` (gradient checks), ``shards`` (tiny
tokenizers and captioned clip folders), ``sequence_parallel`` (gloo process groups) and ``app_browser`` (the
Chromium driver of the app tests, also a script)."""
