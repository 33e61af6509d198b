"""eval/bf16_training_parity.py says what it trained: the token counts come from each run (its log's token grid, its
saved configuration), and the committed results file either measured the shipped recipes (the tokens a clip of the
shipped tokenizers) or says, in the docs' table too, that it did not."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parity(load_script):
    return load_script("eval/bf16_training_parity.py")


def test_token_counts_are_read_from_the_run(parity, tmp_path):
    (tmp_path / "config.yaml").write_text(json.dumps({"model": {"overrides": {"patch_size": [1, 2, 2]}},
                                                      "data": {"batch": 16}}))
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"info": "precision: bf16 (precision=bf16)"},
        {"info": "MaskedVideoTransformer: 2.10 M parameters, 64 clips, token grid (5, 16, 16)"},
        {"step": 1, "loss": 7.0, "tokens_per_s": 1.0})))
    assert parity.measured_tokens(tmp_path) == {
        "token_grid": [5, 16, 16], "tokens_per_clip": 1280, "patch_size": [1, 2, 2],
        "transformer_positions_per_clip": 320, "batch": 16, "tokens_per_batch": 20480}
    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 7.0, "tokens_per_s": 1.0}))
    with pytest.raises(SystemExit, match="names no token grid"):
        parity.measured_tokens(tmp_path)


def test_results_measured_the_shipped_recipes_or_say_they_did_not(parity):
    from vidgen.tokenizers import load_tokenizer
    results = json.loads((ROOT / "docs" / "results" / "bf16_training_parity.json").read_text())
    shipped = {name: math.prod(load_tokenizer(ROOT / tokenizer).latent_grid(17, 64, 64))
               for name, (_, tokenizer, _) in parity.RUNS.items()}
    assert set(shipped.values()) == {1280}  # what the shipped pipelines' tokenizers make of a 17x64x64 clip
    if "stale" in results:
        assert results["tokens_per_clip"] not in shipped.values()
        assert "Not the shipped recipes" in (ROOT / "docs" / "precision.md").read_text()
        return
    for name, row in results["generators"].items():
        assert (row.get("config"), row.get("tokenizer")) == parity.RUNS[name][:2], \
            f"{name}: the results file names no shipped recipe and is not marked stale"
        for precision in ("fp32", "bf16"):
            assert row[precision]["tokens_per_clip"] == shipped[name], (name, precision)
