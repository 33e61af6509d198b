"""Every training config the repository ships parses against its schema, and every generator config builds its
model (with a tiny tokenizer of the right kind standing in for the trained one): a typo in a config fails here, not
an hour into a run."""
from pathlib import Path

import pytest
import torch

from vidgen.tokenizers import CausalVAE, CausalVQVAE
from vidgen.training import GeneratorTrainConfig, load_config
from vidgen.training.generator_loop import build_generator

ROOT = Path(__file__).resolve().parents[1]
GENERATOR_CONFIGS = sorted((ROOT / "pipelines" / "configs").glob("*.yaml"))
TOKENIZER_CONFIGS = sorted((ROOT / "tokenizers" / "configs").rglob("*.yaml"))


def test_there_are_configs_to_check():
    assert len(GENERATOR_CONFIGS) >= 10 and len(TOKENIZER_CONFIGS) >= 10


@pytest.mark.parametrize("path", TOKENIZER_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_tokenizer_config_parses(path):
    cfg = load_config(str(path))
    assert cfg.steps > 0 and cfg.run_dir


@pytest.mark.parametrize("path", GENERATOR_CONFIGS, ids=lambda p: p.name)
def test_generator_config_parses_and_builds_its_model(path):
    cfg = load_config(str(path), schema=GeneratorTrainConfig)
    torch.manual_seed(0)
    if cfg.model.generator == "diffusion":
        tokenizer = CausalVAE.from_preset("tiny")
    else:
        tokenizer = CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4))
    model = build_generator(cfg, text_dim=384, tokenizer=tokenizer)
    def plain(v):
        return list(v) if isinstance(v, (list, tuple)) else v
    for key, value in cfg.model.overrides.items():  # every override reached the model
        held = model.config.get(key, model.config.get("architecture", {}).get(key))
        assert plain(held) == plain(value), (key, held, value)
