"""The training scripts speak as the ``vidgen`` command does: a config error is one line naming it, exit status 2,
without the pinned packages' import-time notices in front of it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vidgen.cli import IMPORT_NOTICES

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["tokenizers/train_tokenizer.py", "pipelines/train_generator.py", "pipelines/distill.py"]


def test_a_missing_config_is_one_line_without_import_notices(tmp_path):
    missing = tmp_path / "nope.yaml"
    runs = {script: subprocess.Popen([sys.executable, str(ROOT / script), "--config", str(missing)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
            for script in SCRIPTS}  # side by side: each spends its time importing
    for script, run in runs.items():
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 2, (script, stderr)
        assert stderr.strip().splitlines() == [f"{Path(script).stem}: error: config file {missing} does not exist"]
        assert not any(text in stderr for text in IMPORT_NOTICES.values())
