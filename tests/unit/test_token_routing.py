"""Token routing in training (``routing: {ratio, start, end}``, vidgen.generators.routing): off at ratio 0 (the forward
is the plain one), and with a ratio the routed tokens leave the span as they entered while the kept tokens attend one
another at their true positions (checked against a full-sequence computation with the routed keys masked out); the
selection comes from the step's seeded generator; what cannot be routed is refused by name."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from vidgen.errors import ConfigError, UnsupportedError
from vidgen.generators import FlowVideoTransformer, MaskedVideoTransformer
from vidgen.generators.backbone import VideoTransformerBackbone, modulate
from vidgen.generators.config import BackboneConfig
from vidgen.generators.routing import TokenRoute, draw_route
from vidgen.rng import RowGenerator, rows
from vidgen.training import GeneratorTrainConfig, load_config
from vidgen.training.routing import RoutingConfig, check_run_routing

pytestmark = pytest.mark.usefixtures("one_thread")
GRID, P = (2, 3, 4), 3  # 24 video tokens after 3 prefix tokens


def _live(module):
    """Random weights everywhere (the residual gates start at zero: every block would be the identity)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return module


@pytest.fixture(scope="module")
def backbone():
    return _live(VideoTransformerBackbone(BackboneConfig(dim=32, depth=4, num_heads=2, max_grid=(4, 4, 4)))).eval()


def _inputs(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = GRID[0] * GRID[1] * GRID[2]
    return (torch.randn(b, n, 32, generator=g), torch.randn(b, 32, generator=g), torch.randn(b, P, 32, generator=g))


def _plain(backbone, x, cond, prefix):
    """The backbone's forward written out: every token through every block."""
    tokens, mod = torch.cat([prefix, x], 1), backbone.modulation(cond).unflatten(-1, (6, -1))
    for block in backbone.blocks:
        tokens = block(tokens, mod, GRID, P)
    shift, scale = backbone.final_modulation(cond).chunk(2, dim=-1)
    return modulate(backbone.final_norm(tokens[:, P:]), shift, scale)


def _masked_reference(backbone, x, cond, prefix, route):
    """Routing computed another way: the whole sequence goes through every block; in the span, attention masks out
    the routed tokens as keys (RoPE over the whole grid) and the routed tokens' rows are put back as they were."""
    tokens, mod = torch.cat([prefix, x], 1), backbone.modulation(cond).unflatten(-1, (6, -1))
    kept = torch.zeros(x.shape[0], tokens.shape[1], dtype=torch.bool)
    kept[:, :P] = True
    kept.scatter_(1, route.keep + P, True)

    def attend(attn, y):
        cfg = attn.config
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=cfg.num_heads) for t in attn.qkv(y).chunk(3, dim=-1))
        q, k = attn.rope(attn.q_norm(q), attn.k_norm(k), GRID, P)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=kept[:, None, None, :])
        return attn.proj(rearrange(out, "b h n d -> b n (h d)"))
    for i, block in enumerate(backbone.blocks):
        if route.start <= i < route.end:
            tokens = torch.where(kept[..., None], block(tokens, mod, GRID, P, attend=attend), tokens)
        else:
            tokens = block(tokens, mod, GRID, P)
    shift, scale = backbone.final_modulation(cond).chunk(2, dim=-1)
    return modulate(backbone.final_norm(tokens[:, P:]), shift, scale)


def _route(ratio=0.5, start=1, end=3, seed=0, b=2, n=24, depth=4):
    return draw_route(RoutingConfig(ratio, start, end), rows(torch.Generator().manual_seed(seed)), b, n, depth)


def test_without_routing_the_forward_is_the_plain_one(backbone):
    x, cond, prefix = _inputs()
    assert torch.equal(backbone(x, GRID, cond, prefix=prefix), _plain(backbone, x, cond, prefix))
    assert _route(ratio=0.0) is None and _route(ratio=0.01) is None  # 0.01 of 24 tokens routes none


def test_routed_tokens_skip_the_span_and_kept_ones_attend_at_their_positions(backbone):
    x, cond, prefix = _inputs()
    route = _route()
    assert route.keep.shape == (2, 12) and (route.start, route.end) == (1, 3)
    seen = {}
    hooks = [backbone.blocks[0].register_forward_hook(lambda m, a, out: seen.update(before=out)),
             backbone.blocks[3].register_forward_pre_hook(lambda m, a: seen.update(after=a[0]))]
    try:
        out = backbone(x, GRID, cond, prefix=prefix, route=route)
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == x.shape and torch.isfinite(out).all()
    routed = torch.ones(2, 24, dtype=torch.bool)
    routed.scatter_(1, route.keep, False)
    before, after = seen["before"][:, P:], seen["after"][:, P:]
    assert before.shape == after.shape == (2, 24, 32)
    assert torch.equal(after[routed], before[routed])  # the routed tokens left the span as they entered it
    assert not torch.allclose(after[~routed], before[~routed])  # the kept ones went through it
    torch.testing.assert_close(out, _masked_reference(backbone, x, cond, prefix, route), atol=2e-5, rtol=1e-5)
    assert not torch.allclose(out, backbone(x, GRID, cond, prefix=prefix), atol=1e-3)


def test_a_routed_forward_runs_under_bf16_autocast_and_agrees_with_fp32(backbone):
    """Under autocast the tokens entering the span come out of a linear layer in bf16 while those leaving it are
    fp32 (the residual stream): the scatter joins them in the wider dtype. bf16 tolerance against the fp32 call."""
    x, cond, prefix = _inputs()
    route = _route(start=0, end=2)
    reference = backbone(x, GRID, cond, prefix=prefix, route=route)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = backbone(x.bfloat16(), GRID, cond, prefix=prefix.bfloat16(), route=route)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)
    kept = torch.randn(2, P + 12, 32)
    joined = route.scatter(torch.randn(2, P + 24, 32).bfloat16(), kept, P)
    assert joined.dtype == torch.float32 and torch.equal(joined[:, :P], kept[:, :P])


def test_gradients_flow_through_the_span_and_around_it(backbone):
    x, cond, prefix = (t.requires_grad_(True) for t in _inputs())
    backbone.zero_grad()
    backbone(x, GRID, cond, prefix=prefix, route=_route()).square().mean().backward()
    assert (x.grad.abs().sum(-1) > 0).all()  # every token, routed or kept, reaches the loss
    assert prefix.grad.abs().sum() > 0 and cond.grad.abs().sum() > 0
    for i in range(4):
        assert backbone.blocks[i].attn.qkv.weight.grad.abs().sum() > 0, i
    backbone.zero_grad()


def test_the_selection_comes_from_the_seeded_generator():
    a, b = _route(seed=3), _route(seed=3)
    assert torch.equal(a.keep, b.keep) and not torch.equal(a.keep, _route(seed=4).keep)
    for row in a.keep:  # ascending, distinct, in range
        assert torch.equal(row, row.unique()) and 0 <= row.min() and row.max() < 24
    # split over processes: each rank draws its rows of the one global draw
    full = draw_route(RoutingConfig(0.5), rows(torch.Generator().manual_seed(5)), 4, 24, 4).keep
    rank1 = draw_route(RoutingConfig(0.5), RowGenerator(torch.Generator().manual_seed(5), 1, 2), 2, 24, 4).keep
    assert torch.equal(rank1, full[1::2])


def test_the_flow_loss_routes_with_its_generator():
    torch.manual_seed(0)
    model = _live(FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=(2, 4, 4), patch_size=(1, 1, 1)))
    x = torch.randn(2, 4, 2, 4, 4)
    g = torch.Generator().manual_seed(7)
    plain = model.loss(x, None, g)[0]
    after_plain = torch.rand(1, generator=g)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(model.loss(x, None, g, routing=RoutingConfig())[0], plain)  # ratio 0: the same draws too
    assert torch.equal(torch.rand(1, generator=g), after_plain)
    routing = RoutingConfig(ratio=0.5, start=0, end=1)
    routed = model.loss(x, None, torch.Generator().manual_seed(7), routing=routing)[0]
    assert torch.equal(routed, model.loss(x, None, torch.Generator().manual_seed(7), routing=routing)[0])
    assert not torch.equal(routed, plain)
    routed.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.backbone.parameters())


def test_bad_settings_are_refused_by_name():
    for kwargs, match in (({"ratio": 1.0}, r"routing\.ratio must be a number >= 0 and < 1 .*got 1\.0"),
                          ({"ratio": -0.1}, r"routing\.ratio must be .*got -0\.1"),
                          ({"start": 3, "end": 2}, r"routing\.start=3 must be below routing\.end=2"),
                          ({"start": 1.5}, r"routing\.start must be a whole number >= 0 .*got 1\.5")):
        with pytest.raises(ConfigError, match=match):
            RoutingConfig(**kwargs)
    with pytest.raises(ConfigError, match=r"routing\.ratio must be"):
        load_config(None, ["routing.ratio=1"], schema=GeneratorTrainConfig)
    with pytest.raises(ConfigError, match=r"blocks \[1, 1\) are not a non-empty span of this model's 2 blocks"):
        RoutingConfig(0.5).span(2)
    assert RoutingConfig(0.5).span(6) == (1, 5) and RoutingConfig(0.5, 0, 2).span(2) == (0, 2)

    def run(generator="flow", **arch):
        cls = FlowVideoTransformer if generator == "flow" else MaskedVideoTransformer
        kw = dict(in_channels=4) if generator == "flow" else dict(vocab_size=16)
        return cls.from_preset("tiny", max_grid=(4, 4, 4), depth=4, **kw, **arch)
    cfg = SimpleNamespace(routing=RoutingConfig(0.5), model=SimpleNamespace(generator="flow"))
    assert check_run_routing(cfg, run()) is cfg.routing
    for layout in ("window", "spatiotemporal", "frame_causal"):
        with pytest.raises(UnsupportedError, match=rf"layout='{layout}'.*set model\.overrides\.layout=full, or "
                                                   r"routing\.ratio=0"):
            check_run_routing(cfg, run(layout=layout))
    with pytest.raises(UnsupportedError, match=r"model\.generator=masked .*does not support it; set routing\.ratio=0"):
        check_run_routing(SimpleNamespace(routing=cfg.routing, model=SimpleNamespace(generator="masked")),
                          run("masked"))
    with pytest.raises(UnsupportedError, match=r"sequence parallelism \(sp_size > 1\).*set routing\.ratio=0"):
        check_run_routing(cfg, run(), sp=object())
    backbone = run().backbone
    route = TokenRoute(torch.zeros(1, 2, dtype=torch.long), 1, 3)
    with pytest.raises(UnsupportedError, match=r"a KV cache or an owner's own attention call"):
        backbone(torch.zeros(1, 64, 64), (4, 4, 4), torch.zeros(1, 64), route=route, attend=lambda i, a, y: y)


@pytest.mark.slow  # two training runs; the seeded selection is covered in make test
def test_a_routed_generator_run_resumes_bit_identically(tmp_path):
    from safetensors.torch import load_file

    from vidgen.tokenizers import CausalVAE
    from vidgen.training import train_generator
    torch.manual_seed(0)
    vae = _live(CausalVAE.from_preset("tiny"))
    vae.save_pretrained(tmp_path / "vae")

    def run(name, *extra):
        return train_generator(load_config(None, [
            f"run_dir={tmp_path / name}", f"video_tokenizer={tmp_path / 'vae'}", "model.generator=flow",
            "model.preset=tiny", "model.overrides={max_grid: [4, 4, 4]}", "data.conditioning=none", "data.num_clips=8",
            "data.num_frames=10", "data.size=32", "data.batch=4", f"data.cache_dir={tmp_path / 'cache'}", "steps=4",
            "log_every=1", "sample_every=0", "ckpt_every=2", "keep_checkpoints=5", "optim.lr=2e-3",
            "routing.ratio=0.5", "routing.start=0", "routing.end=1", *extra], schema=GeneratorTrainConfig))
    run("a", "resume=")
    assert "token routing: 0.5 of the video tokens skip blocks [0, 1) in training" in \
        (tmp_path / "a" / "log.jsonl").read_text()
    run("b", f"resume={tmp_path / 'a' / 'checkpoints' / 'step_00000002'}")
    wa, wb = (load_file(str(tmp_path / r / "checkpoints" / "step_00000004" / "diffusion_pytorch_model.safetensors"))
              for r in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    run("c", "resume=", "routing.ratio=0")  # the same run unrouted trains other weights
    wc = load_file(str(tmp_path / "c" / "checkpoints" / "step_00000004" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
