"""From finished runs to shipped weights: run summaries that follow init_from stages, float16 storage that loads as
float32, and tokenizers/ship_tokenizer.py (copy verified, model card with every stage and the benchmark row)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vidgen.errors import ConfigError
from vidgen.tokenizers import load_tokenizer
from vidgen.training import load_config, train
from vidgen.training.release import run_stages, run_summary, store_half

TINY = ["model.preset=tiny", "data.num_frames=5", "data.size=16", "data.num_clips=4", "data.video_batch=2",
        "data.image_batch=1", "data.eval_clips=2", "data.eval_frames=5", "loss.perceptual=0", "loss.gan=0",
        "optim.warmup_steps=1", "log_every=1", "eval_every=2", "sample_every=100", "stats_clips=1", "resume="]


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    first, second = root / "stage1", root / "stage2"
    train(load_config(None, TINY + [f"run_dir={first}", "steps=2"]))
    train(load_config(None, TINY + [f"run_dir={second}", "steps=2", f"init_from={first / 'final'}",
                                    "trainable=decoder", "loss.temporal=1.0"]))
    return first, second


def test_run_summary_and_stages(two_stages, tmp_path):
    first, second = two_stages
    summary = run_summary(second)
    assert summary["steps"] == 2 and summary["threads"] == 1 and summary["eval_psnr"] > 0
    assert 0 < summary["wall_time_min"] < 10
    stages = run_stages(second)
    assert [Path(s["run_dir"]).name for s in stages] == ["stage1", "stage2"]
    assert stages[1]["config"]["trainable"] == "decoder"
    with pytest.raises(ConfigError, match="log.jsonl"):
        run_summary(tmp_path)


def test_run_summary_reads_the_logged_precision(two_stages, tmp_path):
    from vidgen.precision import resolve_precision
    # the trainer logs what "auto" chose on this machine; the summary (and so the model card) gives that
    assert run_summary(two_stages[1])["precision"] == resolve_precision("auto")
    logged = tmp_path / "bf16_run"
    logged.mkdir()
    (logged / "log.jsonl").write_text('{"info": "precision: bf16 (precision=auto)", "time": 1.0}\n'
                                      '{"step": 1, "loss": 0.5, "time": 2.0}\n')
    assert run_summary(logged)["precision"] == "bf16"
    old = tmp_path / "old_run"  # a log from before the trainer logged its precision: fp32 was the only option
    old.mkdir()
    (old / "log.jsonl").write_text('{"step": 1, "loss": 0.5, "time": 2.0}\n')
    assert run_summary(old)["precision"] == "fp32"


def test_store_half_halves_bytes_and_loads_as_float32(two_stages, tmp_path):
    model = load_tokenizer(two_stages[0] / "final")
    folder = tmp_path / "half"
    model.save_pretrained(folder, safe_serialization=True)
    weights = folder / "diffusion_pytorch_model.safetensors"
    before = weights.stat().st_size
    store_half(folder)
    assert weights.stat().st_size < 0.6 * before
    loaded = load_tokenizer(folder)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    x = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        a = model.reconstruct(x, sample_posterior=False).sample
        b = loaded.reconstruct(x, sample_posterior=False).sample
    assert 0 < (a - b).abs().max() < 0.02  # float16 rounding of the weights only


def test_ship_tokenizer_writes_a_loadable_folder_with_a_card(two_stages, tmp_path, load_script):
    ship = load_script("tokenizers/ship_tokenizer.py")
    final = two_stages[1] / "final"
    results = tmp_path / "bench.json"
    row = {"tokenizer": str(final), "psnr": 21.5, "ssim": 0.7, "ST-LPIPS-alex": 0.2, "rfvd": 900.0,
           "rfvd_noise_floor": {"split_half_fd": 600.0, "split_half_sizes": [4, 4], "estimate": 300.0, "reliable": False},
           "psnr_per_source": {"coins": 20.0, "rocket": 23.0},  # the noise floor as bench_tokenizers.py records it
           "command": "python eval/bench_tokenizers.py stage2/final"}  # the command that measured this row (--keep)
    results.write_text(json.dumps({"command": "python eval/bench_tokenizers.py other/final --keep",
                                   "date": "2026-11-23T00:00:00",
                                   "setup": {"clips": 2, "frames": 5, "size": 16, "perceptual": "ST-LPIPS-alex"},
                                   "rows": [row]}))
    out = tmp_path / "pretrained" / "tiny-vae"
    assert ship.main([str(final), str(out), "--results", str(results)]) == 0
    card = (out / "README.md").read_text()
    for must in ("| 1 | `stage1`", "| 2 | `stage2`", "trains the decoder only", "CPU-hours", "21.50 dB",
                 "coins 20.00", "rocket 23.00", "900 (noise floor 300, unreliable at this sample size)",
                 "(`python eval/bench_tokenizers.py stage2/final`:"):
        assert must in card, must
    assert "other/final" not in card  # the file's last command measured other rows
    assert load_tokenizer(out).config.latent_channels == load_tokenizer(final).config.latent_channels
    assert all(f.suffix in (".json", ".safetensors", ".md") for f in out.iterdir())


def test_bench_tokenizers_keep_adds_rows_beside_those_of_gone_runs(two_stages, tmp_path, load_script):
    bench = load_script("eval/bench_tokenizers.py")
    first, second = (str(stage / "final") for stage in two_stages)
    results = tmp_path / "bench.json"
    setup = ["--clips", "2", "--frames", "5", "--size", "32", "--no-fvd", "--threads", "1", "--results", str(results)]
    assert bench.main([first, *setup, "--out", str(tmp_path / "a")]) == 0
    assert bench.main([second, first, *setup, "--out", str(tmp_path / "b"), "--keep"]) == 0
    rows = json.loads(results.read_text())["rows"]
    assert [r["tokenizer"] for r in rows] == [second, first]  # re-measured rows replace the kept ones, no duplicates
    assert all(r["command"].startswith("python") for r in rows)
    assert bench.main([second, *setup, "--out", str(tmp_path / "c"), "--keep"]) == 0
    rows = json.loads(results.read_text())["rows"]
    assert [r["tokenizer"] for r in rows] == [first, second]  # first's row kept with the command that measured it
    assert "--keep" in rows[1]["command"]
    # a run is named by its folder (runs/<run>/final), a shipped tokenizer by its own (pretrained/<name>)
    assert [bench.label(p) for p in (first, "pretrained/natural-fsq-small")] == ["stage1", "natural-fsq-small"]
    with pytest.raises(SystemExit, match="--keep: .* differs"):  # rows of another setup would not compare
        bench.main([second, *setup[:-2], "--size", "48", "--results", str(results), "--out", str(tmp_path / "d"),
                    "--keep"])
