"""`vidgen eval recon` end to end on a tiny saved VAE (numbers are not checked for quality, only consistency)."""
import json

import torch

from vidgen.cli import main
from vidgen.tokenizers import CausalVAE


def test_eval_recon_cli_writes_results(tmp_path):
    torch.manual_seed(0)
    CausalVAE.from_preset("tiny").save_pretrained(tmp_path / "vae")
    out = tmp_path / "out"
    code = main(["eval", "recon", str(tmp_path / "vae"), "--clips", "2", "--frames", "5", "--size", "16",
                 "--tiling-size", "32", "--tile", "16", "--tile-overlap", "8", "--png-clips", "1", "--out", str(out),
                 "--precision", "fp32"])  # exact chunking is an fp32 claim (bf16: tests/unit/test_tokenizers_bf16.py)
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert result["clips"] == 2 and result["class"] == "CausalVAE" and result["precision"] == "fp32"
    assert 0 < result["psnr"] < 100 and result["encode_frames_per_s"] > 0
    assert result["max_abs_diff_chunked_vs_one_shot"] <= 1e-5
    assert result["tiling"]["psnr_tiled_vs_untiled"] > 0
    assert len(list(out.glob("clip_000_*.png"))) == 1
    assert result["rfvd"] is None and result["not_measured"]["rfvd"] == "pass --fvd"  # a number or null, never text
    per = result["psnr_per_source"]  # one entry per held-out photograph, whose clip-weighted mean is the mean
    assert 1 <= len(per) <= 2 and all(0 < v < 100 for v in per.values())


def test_reconstruction_keeps_no_autograd_graph():
    """Each batch's graph used to stay alive through the kept outputs: RSS grew with the number of clips (22 GB on
    32 clips at 128x128). The parameters require grad, as a freshly loaded model's do."""
    from vidgen.cli.eval_recon import _reconstruct
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny")
    assert any(p.requires_grad for p in vae.parameters())
    recon = _reconstruct(vae, torch.rand(3, 3, 5, 16, 16) * 2 - 1, 2, None)[0]
    assert recon.shape == (3, 3, 5, 16, 16) and not recon.requires_grad and recon.grad_fn is None


def test_per_source_means():
    from vidgen.cli.eval_recon import per_source
    assert per_source(torch.tensor([10.0, 20.0, 30.0]), ["b", "a", "b"]) == {"a": 20.0, "b": 20.0}


def test_eval_recon_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "recon", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_eval_recon_refuses_bad_options_before_any_work(tmp_path, capsys):
    """Refused before a clip is read or a folder made: rFVD from one clip, a negative PNG count, --out on a file."""
    assert main(["eval", "recon", "bicubic", "--clips", "1", "--fvd", "--out", str(tmp_path / "o")]) == 2
    assert "--fvd needs at least 2 clips (a covariance), got --clips 1" in capsys.readouterr().err
    assert main(["eval", "recon", "bicubic", "--png-clips", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--png-clips must be >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("x")
    assert main(["eval", "recon", "bicubic", "--clips", "2", "--frames", "5", "--size", "16",
                 "--out", str(tmp_path / "file")]) == 2
    assert "--out " in (err := capsys.readouterr().err) and "is a file, not a folder; give a folder path" in err


def test_bicubic_baseline_runs_through_eval_recon_with_its_compression(tmp_path):
    out = tmp_path / "out"
    assert main(["eval", "recon", "bicubic", "--clips", "2", "--frames", "5", "--size", "16", "--png-clips", "0",
                 "--tiling-size", "32", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["class"] == "ResizeBaseline" and result["params_m"] == 0
    assert result["compression"] == (5 * 16 * 16) / (3 * 4 * 4)  # frames 0, 2, 4 at 4x4 pixels
    assert 15 < result["psnr"] < 60 and "tiling" not in result  # nothing to tile


def test_recon_comparison_rows_and_table(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "eval" / "recon_benchmark.py"
    spec = importlib.util.spec_from_file_location("_recon_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    CausalVAE.from_preset("tiny").save_pretrained(tmp_path / "vae")
    results = tmp_path / "cmp.json"
    assert bench.main(["-", "--compare", "resize=bicubic", f"tiny={tmp_path / 'vae'}", "--datasets", "natural",
                       "scenes", "--sizes", "16", "--clips", "2", "--frames", "5", "--results", str(results),
                       "--out", str(tmp_path / "o")]) == 0
    data = json.loads(results.read_text())
    assert [(r["name"], r["data"]) for r in data["rows"]] == [("resize", "natural"), ("resize", "scenes"),
                                                              ("tiny", "natural"), ("tiny", "scenes")]
    assert not any("frames_per_s" in key for row in data["rows"] for key in row)  # quality only
    table = bench.comparison_table(data)
    assert table.count("\n| ") == 4 and "| – |" in table  # 4 rows below the header; the baseline has no gap
    gap = data["rows"][2]["psnr"] - data["rows"][0]["psnr"]
    assert f"{gap:+.2f} dB" in table
    with_codes = bench.comparison_table({**data, "rows": [data["rows"][0], {**data["rows"][2], "utilization": 0.975}]})
    assert "| 97.5% |" in with_codes and "| 97.5% |" not in table  # a discrete tokenizer's codebook use


def test_eval_recon_counts_a_discrete_tokenizers_codebook_use(tmp_path):
    """The FSQ target is joint (PSNR at a codebook use), so `eval recon` reports both from one pass; the counts must
    equal a separate tokenization of the same clips, and the resize baseline (no codes) gets none."""
    from vidgen.cli.eval_recon import load_eval_set
    from vidgen.testing import perturb_weights
    from vidgen.tokenizers import CausalVQVAE
    from vidgen.tokenizers.quantizers import CodebookUsage

    torch.manual_seed(0)
    perturb_weights(CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4)), scale=0.5).save_pretrained(
        tmp_path / "fsq")
    out = tmp_path / "out"
    assert main(["eval", "recon", str(tmp_path / "fsq"), "--clips", "3", "--frames", "5", "--size", "16",
                 "--batch", "2", "--png-clips", "0", "--out", str(out), "--precision", "fp32"]) == 0
    result = json.loads((out / "results.json").read_text())
    model = CausalVQVAE.from_pretrained(tmp_path / "fsq")
    clips, _ = load_eval_set("natural", 3, 5, 16)
    expected = CodebookUsage(model.vocab_size)
    with torch.no_grad():
        expected.update(model.tokenize(clips))
    assert result["tokens_counted"] == expected.total == 3 * 2 * 2 * 2  # 3 clips of 2x2x2 tokens
    assert result["utilization"] == expected.utilization and 0 < result["utilization"] <= 1
    assert abs(result["perplexity"] - expected.perplexity) < 1e-9
    assert main(["eval", "recon", "bicubic", "--clips", "2", "--frames", "5", "--size", "16", "--png-clips", "0",
                 "--out", str(tmp_path / "b")]) == 0
    assert "utilization" not in json.loads((tmp_path / "b" / "results.json").read_text())


def _folder_with_a_short_clip(root):
    from vidgen.io import write_video
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    for name, frames in (("a_good.mp4", 9), ("b_short.mp4", 4), ("c_good.mp4", 9)):
        write_video(root / name, torch.rand(3, frames, 16, 16, generator=g) * 2 - 1, fps=8)
    return root


def test_skip_bad_records_each_skipped_clip_and_why(tmp_path, capsys):
    """A clip shorter than --frames used to abort the run with no way to skip it."""
    data = _folder_with_a_short_clip(tmp_path / "videos")
    common = ["eval", "recon", "bicubic", "--data", str(data), "--clips", "3", "--frames", "9", "--size", "16",
              "--png-clips", "0"]
    assert main(common + ["--out", str(tmp_path / "strict")]) == 2
    assert "b_short.mp4" in capsys.readouterr().err and not (tmp_path / "strict" / "results.json").exists()
    assert main(common + ["--skip-bad", "--out", str(tmp_path / "o")]) == 0
    result = json.loads((tmp_path / "o" / "results.json").read_text())
    assert result["clips"] == 2 and sorted(result["psnr_per_source"]) == ["a_good.mp4", "c_good.mp4"]
    [skipped] = result["skipped"]
    assert skipped["clip"] == str(data / "b_short.mp4") and "only 4 frames" in skipped["reason"]


def test_rfvd_from_few_clips_is_flagged_unreliable_in_the_file_and_the_tables(tmp_path, load_script):
    out = tmp_path / "out"
    assert main(["eval", "recon", "bicubic", "--clips", "2", "--frames", "9", "--size", "16", "--png-clips", "0",
                 "--fvd", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert isinstance(result["rfvd"], float) and result["protocol"] is None and result["skipped"] == []
    assert result["rfvd_reliability"] == {"n_real": 2, "n_fake": 2, "min_samples": 1600, "reliable": False}
    bench = load_script("eval/recon_benchmark.py")
    flagged = f"{result['rfvd']:.0f} (unreliable: 2 clips, < 1600)"
    assert bench.rfvd_cell(result) == flagged
    assert bench.comparison_table({"rows": [{**result, "name": "b"}], "threads": 1, "date": "2026", "command": "c"}) \
        .count(flagged) == 1
    reliable = {**result, "rfvd_reliability": {**result["rfvd_reliability"], "n_real": 1600, "n_fake": 1600,
                                               "reliable": True}}
    assert bench.rfvd_cell(reliable) == f"{result['rfvd']:.0f}"
    old_file = {k: v for k, v in result.items() if k != "rfvd_reliability"}  # judged by its clip count
    assert bench.rfvd_cell(old_file) == flagged


class _FakeLPIPS(torch.nn.Module):
    name = "LPIPS-alex"

    def forward(self, x, y):
        return (x - y).abs().flatten(1).mean(1)


def test_protocol_preset_sets_the_published_settings_and_is_recorded(tmp_path, monkeypatch):
    """--protocol published-17x256: 17 frames at 256x256, LPIPS with the AlexNet backbone, I3D rFVD; the results
    name the preset. LPIPS' ImageNet backbone is not on this machine, so the loader is stood in for, after checking
    what the protocol asks it for."""
    import vidgen.metrics.perceptual as perceptual
    asked = []
    monkeypatch.setattr(perceptual, "load_perceptual", lambda kind="auto", net="alex": asked.append((kind, net))
                        or _FakeLPIPS())
    out = tmp_path / "out"
    assert main(["eval", "recon", "bicubic", "--protocol", "published-17x256", "--clips", "2", "--png-clips", "0",
                 "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert asked == [("lpips", "alex")]
    assert (result["frames"], result["size"]) == (17, 256) and result["perceptual_metric"] == "LPIPS-alex"
    assert isinstance(result["LPIPS-alex"], float) and isinstance(result["rfvd"], float)
    assert result["protocol"]["name"] == "published-17x256"
    assert result["protocol"]["metrics"] == ["PSNR", "SSIM", "LPIPS-alex", "rFVD"]


def test_protocol_without_the_lpips_backbone_stops_before_reading_a_clip(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    out = tmp_path / "out"
    assert main(["eval", "recon", "bicubic", "--protocol", "published-17x256", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--protocol published-17x256 reports LPIPS-alex" in err and "alexnet-owt-7be5be79.pth (missing)" in err
    assert not out.exists()
