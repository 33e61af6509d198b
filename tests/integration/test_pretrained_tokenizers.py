"""The shipped general (natural-clip) tokenizers in pretrained/: they load offline as float32, reconstruct real
held-out clips as well as their cards say (live weights, a few clips), and ``vidgen eval recon`` runs on them from
the command line as a newcomer would, with no training first."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from vidgen.cli.eval_recon import load_eval_set, reconstruct
from vidgen.metrics.reconstruction import psnr
from vidgen.tokenizers import CausalVAE, CausalVQVAE, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
PRETRAINED = ROOT / "pretrained"
# folder -> (class, lowest mean PSNR in dB on the first 4 held-out clips, one per photograph, 9 frames at 64x64). The
# shipped weights measure 32.62 / 24.98 dB there; the bounds sit about 2 dB under, far above an untrained model.
SHIPPED = {"natural-vae-small": (CausalVAE, 30.5), "natural-fsq-small": (CausalVQVAE, 23.0)}


@pytest.fixture(scope="module")
def clips():
    return load_eval_set("natural", 4, 9, 64, 0)[0]


@pytest.mark.parametrize("folder", list(SHIPPED))
def test_loads_as_float32_and_reconstructs_held_out_clips(folder, clips):
    cls, bound = SHIPPED[folder]
    model = load_tokenizer(PRETRAINED / folder)
    assert type(model) is cls
    assert all(p.dtype == torch.float32 for p in model.parameters())
    recon = reconstruct(model, clips, 4, None)[0]
    assert recon.shape == clips.shape
    value = psnr(clips, recon).mean().item()
    assert value >= bound, f"{folder}: {value:.2f} dB on 4 held-out clips (bound {bound})"


@pytest.mark.parametrize("folder", list(SHIPPED))
def test_card_states_data_steps_cpu_hours_and_metrics(folder):
    card = (PRETRAINED / folder / "README.md").read_text()
    for must in ("Data", "steps", "CPU-hours", "PSNR", "chelsea"):
        assert must in card, f"{folder}/README.md lacks {must!r}"
    assert re.search(r"\d+(\.\d+)? dB", card)


def test_vidgen_eval_recon_runs_on_the_shipped_vae(tmp_path, capsys):
    """``vidgen eval recon`` (the command's ``main``, in this process) on the shipped VAE."""
    from vidgen.cli import main
    assert main(["eval", "recon", str(PRETRAINED / "natural-vae-small"), "--clips", "2", "--frames", "9",
                 "--png-clips", "1", "--out", str(tmp_path)]) == 0, capsys.readouterr().err[-2000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["class"] == "CausalVAE" and result["clips"] == 2 and result["psnr"] > 24
    assert list(tmp_path.glob("clip_000_psnr*.png"))
