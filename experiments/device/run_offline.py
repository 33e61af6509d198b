"""Run a script with offline_env.py's substitutions outside pytest: the recorded text-encoder table (or, with
VIDGEN_TEXT_RECORD set, the recorder) and PyAV's stand-in, installed as its pytest plugin installs them.

    python experiments/device/run_offline.py eval/bench_pipelines.py --device cuda --batch 8
"""
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import offline_env  # noqa: E402

offline_env.pytest_configure(None)
script = sys.argv[1]
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as stop:
    code = stop.code or 0
finally:
    offline_env.pytest_sessionfinish(None, code)
    for note in offline_env._notes:
        print(f"offline_env: {note}")
sys.exit(code)
