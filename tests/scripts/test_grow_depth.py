"""experiments/grow_depth.py: a deepened generator computes exactly what the trained one did (on live weights), and
its new blocks train from the first step."""
from __future__ import annotations

import pytest
import torch

from vidgen.generators import Conditioning, FlowVideoTransformer, MaskedVideoTransformer
from vidgen.testing import perturb_weights

TEXT_DIM = 16


@pytest.fixture(scope="module")
def grow(load_script):
    return load_script("experiments/grow_depth.py").grow_depth


def text(batch=2):
    g = torch.Generator().manual_seed(1)
    return Conditioning(text=torch.randn(batch, 3, TEXT_DIM, generator=g), text_mask=torch.ones(batch, 3, dtype=torch.bool),
                        pooled=torch.randn(batch, TEXT_DIM, generator=g))


def flow_out(model, seed=2):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 2, 4, 4, generator=g)
    return model(latents, torch.tensor([300.0, 700.0]), text(), return_dict=False)[0]


def masked_out(model, seed=2):
    ids = torch.randint(0, 64, (2, 2, 4, 4), generator=torch.Generator().manual_seed(seed))
    ids[:, 1] = model.mask_token_id
    return model(ids, text())["logits"]


@pytest.mark.parametrize("kind", ["flow", "masked"])
@pytest.mark.parametrize("conditioning", ["prefix", "cross"])
def test_the_deeper_model_computes_the_same_and_its_new_blocks_train(grow, kind, conditioning):
    torch.manual_seed(0)
    arch = dict(text_dim=TEXT_DIM, max_text_tokens=3, max_grid=(2, 4, 4), text_conditioning=conditioning)
    model = FlowVideoTransformer.from_preset("tiny", in_channels=4, **arch) if kind == "flow" else \
        MaskedVideoTransformer.from_preset("tiny", vocab_size=64, **arch)
    perturb_weights(model)  # live weights: every gate and residual branch contributes
    run = flow_out if kind == "flow" else masked_out
    model.eval()
    deeper = grow(model, 3).eval()
    assert len(deeper.backbone.blocks) == 3 * len(model.backbone.blocks)
    with torch.no_grad():
        before, after = run(model), run(deeper)
    assert torch.equal(before, after), (before - after).abs().max()
    # the new blocks are not dead: one step of gradient reaches their zeroed output layers and changes the output
    new = deeper.backbone.blocks[1]
    run(deeper).square().mean().backward()
    assert new.attn.proj.weight.grad.abs().sum() > 0 and new.mlp[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        for p in deeper.parameters():
            p.sub_(0.1 * p.grad) if p.grad is not None else None
        assert not torch.allclose(run(deeper), before)


def test_a_factor_below_two_is_refused(grow):
    with pytest.raises(ValueError, match="factor must be an int >= 2"):
        grow(FlowVideoTransformer.from_preset("tiny", in_channels=4), 1)
