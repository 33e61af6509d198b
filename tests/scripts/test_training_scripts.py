"""The training scripts speak as the ``vidgen`` command does: a config error is one line naming it, exit status 2,
without the pinned packages' import-time notices in front of it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidgen.cli import IMPORT_NOTICES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["tokenizers/train_tokenizer.py", "pipelines/train_generator.py",
                                    "pipelines/distill.py"])
def test_a_missing_config_is_one_line_without_import_notices(script, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / script), "--config", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"{Path(script).stem}: error: config file {tmp_path / 'nope.yaml'} "
                                               "does not exist"]
    assert not any(text in run.stderr for text in IMPORT_NOTICES.values())
