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
                 "--precision", "fp32"])  # exact chunking is an fp32 claim (bf16: tests/test_tokenizers_bf16.py)
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert result["clips"] == 2 and result["class"] == "CausalVAE" and result["precision"] == "fp32"
    assert 0 < result["psnr"] < 100 and result["encode_frames_per_s"] > 0
    assert result["max_abs_diff_chunked_vs_one_shot"] <= 1e-5
    assert result["tiling"]["psnr_tiled_vs_untiled"] > 0
    assert len(list(out.glob("clip_000_*.png"))) == 1
    per = result["psnr_per_source"]  # one entry per held-out photograph, whose clip-weighted mean is the mean
    assert 1 <= len(per) <= 2 and all(0 < v < 100 for v in per.values())


def test_per_source_means():
    from vidgen.cli.eval_recon import per_source
    assert per_source(torch.tensor([10.0, 20.0, 30.0]), ["b", "a", "b"]) == {"a": 20.0, "b": 20.0}


def test_eval_recon_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "recon", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "config.json" in capsys.readouterr().err
