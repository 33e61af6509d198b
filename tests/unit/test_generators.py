"""Generators on the shared video-transformer backbone: masked (MaskGIT / AmusedScheduler), flow / diffusion
(diffusers schedulers) and autoregressive (KV cache). Tiny models on a (3, 4, 4) grid; every sampling guarantee
is checked on perturbed weights (a fresh model's zero-initialised gates make every block the identity)."""
import json

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

import vidgen.generators as G
from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators import (
    LAYOUTS,
    AutoregressiveVideoTransformer,
    Conditioning,
    FlowVideoTransformer,
    MaskedVideoTransformer,
    generate_ids,
    generate_latents,
    generate_tokens,
    iter_frames,
)
from vidgen.rng import RowGenerator
from vidgen.testing import perturb_weights
from vidgen.tokenizers import CausalVAE, CausalVQVAE

GRID = (3, 4, 4)
VOCAB = 64
TEXT_DIM = 32
MAX_TEXT = 4
CHANNELS = 4  # the tiny CausalVAE's latent channels
KINDS = ("masked", "flow", "ar")
CLASSES = {"masked": MaskedVideoTransformer, "flow": FlowVideoTransformer, "ar": AutoregressiveVideoTransformer}


# ---------------------------------------------------------------------------------------------------- helpers
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def perturb(model, seed: int = 0, scale: float = 0.05):
    """Add noise to every parameter so zero-initialised gates / heads no longer hide the blocks."""
    return perturb_weights(model, seed=seed, scale=scale).eval()


def build(kind: str, seed: int = 0, scale: float = 0.05, **kw):
    """Tiny text-conditioned generator (``scale=0``: fresh weights)."""
    torch.manual_seed(seed)
    kw = {"text_dim": TEXT_DIM, "max_text_tokens": MAX_TEXT, "max_grid": GRID, **kw}
    if kind == "flow":
        model = FlowVideoTransformer.from_preset("tiny", **{"in_channels": CHANNELS, **kw})
    else:
        model = CLASSES[kind].from_preset("tiny", vocab_size=VOCAB, **kw)
    return perturb(model, seed + 100, scale) if scale else model


def text_cond(batch: int = 2, seed: int = 1) -> Conditioning:
    g = gen(seed)
    mask = torch.ones(batch, 3, dtype=torch.bool)
    mask[:, -1] = False  # one padded text token
    return Conditioning(text=torch.randn(batch, 3, TEXT_DIM, generator=g), text_mask=mask,
                        pooled=torch.randn(batch, TEXT_DIM, generator=g))


def data(kind: str, batch: int = 2, seed: int = 2, grid=GRID) -> torch.Tensor:
    g = gen(seed)
    if kind == "flow":
        return torch.randn(batch, CHANNELS, *grid, generator=g)
    return torch.randint(0, VOCAB, (batch, *grid), generator=g)


def sample(kind: str, model, batch: int = 2, seed: int = 0, grid=GRID, steps: int = 4, **kw) -> torch.Tensor:
    kw.setdefault("guidance_scale", 1.0)  # unguided unless a test asks (the configs' defaults guide)
    if kind == "masked":
        return generate_ids(model, grid=grid, batch=batch, generator=gen(seed), num_inference_steps=steps, **kw)
    if kind == "flow":
        scheduler = kw.pop("scheduler", None) or FlowMatchEulerDiscreteScheduler()
        return generate_latents(model, scheduler=scheduler, grid=grid, batch=batch, generator=gen(seed),
                                num_inference_steps=steps, **kw)
    return generate_tokens(model, grid=grid, batch=batch, generator=gen(seed), **kw)


def check_output(kind: str, out: torch.Tensor, batch: int = 2, grid=GRID) -> None:
    if kind == "flow":
        assert out.shape == (batch, CHANNELS, *grid) and out.is_floating_point()
        assert torch.isfinite(out).all()
    else:
        assert out.shape == (batch, *grid) and out.dtype == torch.long
        assert out.min() >= 0 and out.max() < VOCAB


def differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Ids: any id differs; latents: more than float noise apart (CFG with equal halves is not bit-exact)."""
    if a.is_floating_point():
        return not torch.allclose(a, b, atol=1e-3, rtol=0)
    return not torch.equal(a, b)


def tiny_vqvae(levels=(4, 4, 4)):
    torch.manual_seed(0)
    return CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=levels).eval()


def tiny_vae(**kw):
    torch.manual_seed(0)
    return CausalVAE.from_preset("tiny", **kw).eval()


def video(b=1, t=5, h=32, w=32, seed=3):
    return torch.rand(b, 3, t, h, w, generator=gen(seed)) * 2 - 1


def train_steps(model, x, cond, steps: int) -> list[float]:
    """``steps`` AdamW steps on one fixed batch, cycling the same 4 noise seeds, so the first and the last 4 losses
    are comparable; returns every loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for step in range(steps):
        loss, logs = model.loss(x, cond, gen(step % 4))
        assert torch.isfinite(loss) and isinstance(logs, dict)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------------------------------------------- all generators
@pytest.mark.parametrize("kind", KINDS)
def test_adamw_steps_reduce_the_loss_on_a_fixed_batch(kind):
    model = build(kind, scale=0).train()
    losses = train_steps(model, data(kind), text_cond(), steps=24)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.9 * first, losses


@pytest.mark.parametrize("kind", KINDS)
def test_loss_weight_is_a_weighted_mean_per_sample(kind):
    """Uniform weights (of any scale) give the unweighted loss; uneven ones move it; bad ones are refused."""
    model = build(kind).train()  # perturbed: every position's prediction depends on the weights
    x, cond = data(kind), text_cond()
    grid_shape = (x.shape[0], *x.shape[-3:])
    plain, _ = model.loss(x, cond, gen(5))
    for scale in (1.0, 3.0):
        weighted, _ = model.loss(x, cond, gen(5), torch.full(grid_shape, scale))
        torch.testing.assert_close(weighted, plain, rtol=1e-5, atol=1e-6)
    uneven = torch.ones(grid_shape)
    uneven[:, :, :2] = 8.0  # the top half of every latent frame
    moved, _ = model.loss(x, cond, gen(5), uneven)
    assert abs(moved.item() - plain.item()) > 1e-4
    moved.backward()  # a weighted loss trains like the plain one
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    bad_weights = {"shape": torch.ones(1, *grid_shape[1:]), ">= 0": -uneven, "finite": torch.full(grid_shape, float("nan")),
                   "float": torch.ones(grid_shape, dtype=torch.long)}
    for match, bad in bad_weights.items():
        with pytest.raises(InvalidInputError, match=match):
            model.loss(x, cond, gen(5), bad)


@pytest.mark.parametrize("kind", KINDS)
def test_sampling_shapes_dtypes_and_ranges(kind):
    model = build(kind)
    check_output(kind, sample(kind, model, batch=2, cond=text_cond()))
    check_output(kind, sample(kind, model, batch=1), batch=1)  # unconditional call of a text model
    check_output(kind, sample(kind, model, batch=1, grid=(2, 3, 4)), batch=1, grid=(2, 3, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_output_different_seed_different_output(kind):
    model, cond = build(kind), text_cond()
    a = sample(kind, model, seed=0, cond=cond)
    assert torch.equal(a, sample(kind, model, seed=0, cond=cond))
    assert differ(a, sample(kind, model, seed=1, cond=cond))


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_parameters_and_samples(kind, tmp_path):
    model, cond = build(kind), text_cond()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = CLASSES[kind].from_pretrained(tmp_path).eval()
    assert loaded.backbone_config == model.backbone_config
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    kw = dict(cond=cond, guidance_scale=2.0)
    assert torch.equal(sample(kind, loaded, seed=5, **kw), sample(kind, model, seed=5, **kw))


@pytest.mark.parametrize("kind", KINDS)
def test_classifier_free_guidance_null_and_negative(kind):
    model, cond, negative = build(kind), text_cond(seed=1), text_cond(seed=7)
    plain = sample(kind, model, cond=cond, guidance_scale=1.0)
    guided = sample(kind, model, cond=cond, guidance_scale=3.0)
    guided_neg = sample(kind, model, cond=cond, negative=negative, guidance_scale=3.0)
    for out in (guided, guided_neg):
        check_output(kind, out)
        assert differ(out, plain)
    assert differ(guided, guided_neg)
    # guidance 1 ignores the negative prompt entirely
    assert torch.equal(sample(kind, model, cond=cond, negative=negative, guidance_scale=1.0), plain)


@pytest.mark.parametrize("conditioning", ["text", "class"])
@pytest.mark.parametrize("kind", KINDS)
def test_cfg_dropped_samples_equal_the_unconditional_call(kind, conditioning):
    """The null half of a CFG batch (drop=True) is exactly the model without conditioning."""
    if conditioning == "text":
        model, cond = build(kind), text_cond()
    else:
        model, cond = build(kind, text_dim=0, num_classes=5), Conditioning(class_labels=torch.tensor([1, 4]))
    x, drop = data(kind), torch.tensor([True, False])
    args = (torch.tensor([400.0, 400.0]),) if kind == "flow" else ()
    with torch.no_grad():
        dropped = model(x, *args, cond=cond, drop=drop, return_dict=False)[0]
        uncond = model(x, *args, cond=None, return_dict=False)[0]
        conditioned = model(x, *args, cond=cond, return_dict=False)[0]
    torch.testing.assert_close(dropped[0], uncond[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(dropped[1], conditioned[1], atol=1e-6, rtol=0)
    assert differ(uncond[0], conditioned[0])


def test_flow_cfg_with_negative_equal_to_cond_is_the_conditional_prediction():
    """uncond + s * (cond - uncond) with uncond == cond: the guided result is the conditional one."""
    model, cond = build("flow"), text_cond()
    plain = sample("flow", model, cond=cond, guidance_scale=1.0)
    same = sample("flow", model, cond=cond, negative=cond, guidance_scale=3.0)
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_class_conditioning_in_loss_and_sampling(kind):
    model = build(kind, text_dim=0, num_classes=5, cond_dropout=0.0).train()
    cond = Conditioning(class_labels=torch.tensor([1, 4]))
    loss, _ = model.loss(data(kind), cond, gen(0))
    loss.backward()
    grad = model.cond_embed.class_embed.weight.grad  # (5 + null, d)
    assert grad[[1, 4]].abs().sum(1).min() > 0
    assert grad[[0, 2, 3, 5]].abs().sum() == 0  # no dropout: the null row is unused too
    model.eval()
    a = sample(kind, model, cond=cond)
    check_output(kind, a)
    assert differ(a, sample(kind, model, cond=Conditioning(class_labels=torch.tensor([2, 3]))))
    guided = sample(kind, model, cond=cond, guidance_scale=3.0)  # null class row
    check_output(kind, guided)
    assert differ(a, guided)
    with pytest.raises(InvalidInputError, match="class_labels"):
        sample(kind, model, cond=Conditioning(class_labels=torch.tensor([1, 6])))


@pytest.mark.parametrize("kind", KINDS)
def test_class_labels_without_text_condition_a_text_and_class_model(kind):
    model, x = build(kind, num_classes=5), data(kind)
    args = (torch.tensor([400.0, 400.0]),) if kind == "flow" else ()
    with torch.no_grad():
        a = model(x, *args, cond=Conditioning(class_labels=torch.tensor([1, 4])), return_dict=False)[0]
        b = model(x, *args, cond=Conditioning(class_labels=torch.tensor([2, 3])), return_dict=False)[0]
    assert differ(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_negative_prompt_without_cond_runs_or_raises_a_vidgen_error(kind):
    try:
        out = sample(kind, build(kind), cond=None, negative=text_cond(), guidance_scale=3.0)
    except InvalidInputError as err:
        assert "negative" in str(err) or "cond" in str(err)
    else:
        check_output(kind, out)


@pytest.mark.parametrize("kind", KINDS)
def test_token_interface_with_the_matching_tokenizer(kind):
    model, x = build(kind), video()
    tokenizer = tiny_vae() if kind == "flow" else tiny_vqvae()
    z = model.encode_videos(tokenizer, x)
    if kind == "flow":
        assert z.shape == (1, CHANNELS, 2, 4, 4) and z.is_floating_point()
    else:
        assert z.shape == (1, 2, 4, 4) and z.dtype == torch.long and 0 <= z.min() and z.max() < VOCAB
    loss, _ = model.loss(z, text_cond(1), gen(0))
    assert torch.isfinite(loss)
    assert model.decode_videos(tokenizer, z, 5, 32, 32).shape == (1, 3, 5, 32, 32)


# ---------------------------------------------------------------------------------------------------- masked
def task_mask(task: str, batch: int = 2, grid=GRID) -> torch.Tensor:
    t, h, w = grid
    mask = torch.zeros(batch, t, h, w, dtype=torch.bool)
    if task == "prediction":
        mask[0, :1] = True
        mask[1, :2] = True  # first k latent frames
    elif task == "interpolation":
        mask[:, 0] = mask[:, -1] = True
    elif task == "inpainting":
        mask[:] = True
        mask[:, :, 1:3, 1:3] = False  # all but a box
    elif task == "outpainting":
        mask[:, :, 1:3, 1:3] = True  # only a box
    return mask


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("task", ["prediction", "interpolation", "inpainting", "outpainting"])
def test_masked_keeps_given_tokens_exactly(task, guidance):
    model, given = build("masked"), data("masked", seed=9)
    mask = task_mask(task)
    out = generate_ids(model, grid=GRID, batch=2, cond=text_cond(), guidance_scale=guidance, generator=gen(0),
                       num_inference_steps=6, given_ids=given, given_mask=mask)
    check_output("masked", out)
    assert torch.equal(out[mask], given[mask])
    assert not torch.equal(out[~mask], given[~mask])  # the rest is generated, not copied


def test_masked_all_tokens_given_returns_given_ids():
    model, given = build("masked"), data("masked", seed=9)
    out = generate_ids(model, grid=GRID, batch=2, generator=gen(0), num_inference_steps=4, given_ids=given,
                       given_mask=torch.ones(2, *GRID, dtype=torch.bool))
    assert torch.equal(out, given)


def test_autoregressive_story_training_gives_the_next_clips_last_frames_unscored():
    """story_prob 1: every clip's first latent frame is the next clip's last and is not scored, which is the plain
    loss on those spliced ids with that frame weighted 0 (the reference); at 0.5 the rows the draw picks are
    spliced and the others kept."""
    model = build("ar").train()
    x, cond = data("ar", batch=3), text_cond(3)
    spliced = torch.cat([x.roll(-1, 0)[:, -1:], x[:, 1:]], 1)
    weight = torch.ones(spliced.shape)
    weight[:, :1] = 0
    reference, _ = model.loss(spliced, cond, gen(5), weight)
    story = build("ar", story_prob=1.0).train()
    got, _ = story.loss(x, cond, gen(5))
    assert torch.equal(story.sample_story(x, None, gen(5))[0], spliced)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-6)
    plain, _ = model.loss(x, cond, gen(5))
    assert abs(got.item() - plain.item()) > 1e-4  # splicing changes what the loss sees
    half, half_weight = build("ar", story_prob=0.5).sample_story(x, None, gen(0))
    chosen = RowGenerator(gen(0)).rand(3) < 0.5  # the draw sample_story makes
    assert 0 < int(chosen.sum()) < 3  # this seed splices some rows and not others, so each branch is checked
    for i in range(3):
        assert torch.equal(half[i], spliced[i] if chosen[i] else x[i])
        assert float(half_weight[i, 0].sum()) == (0.0 if chosen[i] else weight[i, 0].numel())
    with pytest.raises(InvalidInputError, match="story_context 3 must be below"):
        build("ar", story_prob=1.0, story_context=3).loss(x, cond, gen(5))


def test_flow_story_training_gives_the_next_clips_last_frames_and_scores_the_rest():
    """story_prob 1: the model is called with the next clip's last latent frame given, clean, in place of the clip's
    first, and nothing else given; the loss is the mean squared error over the other frames only (the reference,
    from the call's own inputs and prediction). The draws before it are those of story_prob 0: the frames after
    the given one enter noised exactly as without the story."""
    x, cond = data("flow", batch=3), text_cond(3)
    seen = {}

    def record(model):
        def hook(module, args, kwargs, out):
            seen[module] = (args[0].clone(), kwargs["given_latents"].clone(), kwargs["given_mask"].clone(),
                            out.sample.detach().clone())
        model.register_forward_hook(hook, with_kwargs=True)
        return model

    plain = record(build("flow", task_prob=0.0).train())
    story = record(build("flow", task_prob=0.0, story_prob=1.0).train())
    plain.loss(x, cond, gen(5))
    loss, _ = story.loss(x, cond, gen(5))
    xt, given_latents, mask, pred = seen[story]
    spliced = torch.cat([x.roll(-1, 0)[:, :, -1:], x[:, :, 1:]], 2)
    assert mask[:, 0].all() and not mask[:, 1:].any()
    assert torch.equal(given_latents, spliced) and torch.equal(xt[:, :, :1], spliced[:, :, :1])
    assert torch.equal(xt[:, :, 1:], seen[plain][0][:, :, 1:])  # the same noised frames as story_prob 0
    target = RowGenerator(gen(5)).randn(*x.shape) - x  # the loss's first draw is the noise; flow's target
    reference = ((pred[:, :, 1:] - target[:, :, 1:]) ** 2).mean(dim=(1, 2, 3, 4)).mean()  # generated frames only
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match="story_context 3 must be below"):
        build("flow", story_prob=1.0, story_context=3).loss(x, cond, gen(5))


def test_masked_loss_is_finite_on_a_one_by_one_spatial_grid():
    model, ids = build("masked"), data("masked", batch=1, grid=(3, 1, 1))
    losses = torch.stack([model.loss(ids, None, gen(seed))[0].detach() for seed in range(60)])
    assert torch.isfinite(losses).all()


def test_masked_top_k_restricts_every_revealed_token_to_the_k_best_logits():
    model, cond, k = build("masked", scale=0.2), text_cond(), 3
    mask_id, state = model.mask_token_id, {"prev": torch.full((2, *GRID), model.mask_token_id)}
    checked = []

    def callback(i, step, kw):
        prev, ids = state["prev"], kw["ids"]
        with torch.no_grad():
            logits = model(prev, cond)["logits"]  # what generate_ids saw at this step (guidance 1)
        top = logits.topk(k, dim=-1).indices
        revealed = (prev == mask_id) & (ids != mask_id)
        in_top = (top == ids[..., None]).any(-1)
        assert in_top[revealed].all(), f"step {i}: a revealed id is outside the top-{k}"
        checked.append(int(revealed.sum()))
        state["prev"] = ids.clone()

    out = generate_ids(model, grid=GRID, batch=2, cond=cond, generator=gen(0), num_inference_steps=4, top_k=k,
                       guidance_scale=1.0, callback=callback)
    assert sum(checked) == out.numel()  # every token was checked when revealed
    # and without top_k some revealed token falls outside the top-k (so the check above can fail)
    state["prev"] = torch.full((2, *GRID), mask_id)
    with pytest.raises(AssertionError, match="outside the top"):
        generate_ids(model, grid=GRID, batch=2, cond=cond, generator=gen(0), num_inference_steps=4, guidance_scale=1.0,
                     callback=callback)


def test_masked_greedy_steps_switch_to_the_most_likely_id_on_the_last_steps():
    """greedy_steps=0 is the plain sampler, greedy_steps >= steps is top-k 1 throughout (same generator, same ids);
    in between, the ids revealed on the last steps are each the argmax of that step's logits."""
    model, cond, steps = build("masked", scale=0.2), text_cond(), 4
    kw = dict(grid=GRID, batch=2, cond=cond, num_inference_steps=steps, top_k=None, guidance_scale=1.0)
    plain = generate_ids(model, generator=gen(0), **kw)
    assert torch.equal(plain, generate_ids(model, generator=gen(0), greedy_steps=0, **kw))
    kw_topk1 = {**kw, "top_k": 1}
    assert torch.equal(generate_ids(model, generator=gen(0), **kw_topk1),
                       generate_ids(model, generator=gen(0), greedy_steps=steps + 3, **kw))
    mask_id, state, greedy_revealed, sampled_off_argmax = model.mask_token_id, {}, [], []

    def callback(i, step, out):
        prev = state.get("prev", torch.full((2, *GRID), mask_id))
        with torch.no_grad():
            best = model(prev, cond)["logits"].argmax(-1)  # what the sampler saw (guidance 1)
        revealed = (prev == mask_id) & (out["ids"] != mask_id)
        off = (out["ids"] != best) & revealed
        (greedy_revealed if i >= steps - 2 else sampled_off_argmax).append(int(off.sum()))
        state["prev"] = out["ids"].clone()

    generate_ids(model, generator=gen(0), greedy_steps=2, callback=callback, **kw)
    assert sum(greedy_revealed) == 0, "a greedy step revealed an id other than the argmax"
    assert sum(sampled_off_argmax) > 0  # the early steps did draw from the distribution (the check can fail)


def test_masked_top_p_draws_inside_the_nucleus():
    """top_p 1 is the plain sampler and a vanishing top_p is top-k 1 (same generator, same ids); top_p 0.5 reveals
    only ids inside that step's nucleus, and without it some revealed id falls outside (the check can fail)."""
    model, cond, mask_id = build("masked", scale=0.2), text_cond(), None
    kw = dict(grid=GRID, batch=2, cond=cond, num_inference_steps=4, guidance_scale=1.0)
    plain = generate_ids(model, generator=gen(0), **kw)
    assert torch.equal(plain, generate_ids(model, generator=gen(0), top_p=1.0, **kw))
    assert torch.equal(generate_ids(model, generator=gen(0), top_k=1, **kw),
                       generate_ids(model, generator=gen(0), top_p=1e-6, **kw))
    mask_id, state = model.mask_token_id, {}

    def callback(i, step, out):
        prev = state.get("prev", torch.full((2, *GRID), mask_id))
        with torch.no_grad():
            probs = model(prev, cond)["logits"].float().softmax(-1)  # what the sampler saw (guidance 1)
        sorted_probs, order = probs.sort(-1, descending=True)
        inside = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, sorted_probs.cumsum(-1) - sorted_probs
                                                                   <= 0.5)
        revealed = (prev == mask_id) & (out["ids"] != mask_id)
        in_nucleus = inside.gather(-1, out["ids"].clamp(max=mask_id - 1)[..., None])[..., 0]
        assert in_nucleus[revealed].all(), f"step {i}: a revealed id is outside the top-p 0.5 nucleus"
        state["prev"] = out["ids"].clone()

    generate_ids(model, generator=gen(0), top_p=0.5, callback=callback, **kw)
    state.clear()
    with pytest.raises(AssertionError, match="outside the top-p"):
        generate_ids(model, generator=gen(0), callback=callback, **kw)


def test_masked_top_1_with_zero_remasking_temperature_ignores_the_seed():
    model = build("masked")
    kw = dict(top_k=1, temperature=(0.0, 0.0), num_inference_steps=4)
    a = generate_ids(model, grid=GRID, batch=2, generator=gen(0), **kw)
    assert torch.equal(a, generate_ids(model, grid=GRID, batch=2, generator=gen(1), **kw))
    b = generate_ids(model, grid=GRID, batch=2, generator=gen(1), temperature=(0.0, 0.0), num_inference_steps=4)
    assert not torch.equal(a, b)


def test_masked_callback_called_once_per_step_and_can_replace_ids():
    model = build("masked")
    mask_id = model.mask_token_id
    calls = []

    def record(i, step, kw):
        calls.append((i, step, kw["ids"].shape))

    generate_ids(model, grid=GRID, batch=2, generator=gen(0), num_inference_steps=5, callback=record)
    assert [c[0] for c in calls] == list(range(5))
    assert [c[1] for c in calls] == [4, 3, 2, 1, 0]
    assert all(c[2] == (2, *GRID) for c in calls)

    fixed = {}

    def replace(i, step, kw):
        if i == 0:  # every token revealed at step 0 becomes id 5: it must survive to the end
            ids = kw["ids"]
            fixed["mask"] = ids != mask_id
            return {"ids": torch.where(fixed["mask"], torch.full_like(ids, 5), ids)}
        return None

    out = generate_ids(model, grid=GRID, batch=2, generator=gen(0), num_inference_steps=5, callback=replace)
    assert fixed["mask"].any() and (~fixed["mask"]).any()
    assert (out[fixed["mask"]] == 5).all()
    assert not (out[~fixed["mask"]] == 5).all()


# ---------------------------------------------------------------------------------------------------- flow
def ddim(kind):
    return DDIMScheduler(prediction_type=kind)


PREDICTIONS = [
    ("flow", FlowMatchEulerDiscreteScheduler),
    ("epsilon", lambda: ddim("epsilon")),
    ("v_prediction", lambda: ddim("v_prediction")),
    ("epsilon", lambda: DDIMScheduler.from_config(DDPMScheduler(prediction_type="epsilon").config)),
    ("v_prediction", lambda: DDIMScheduler.from_config(DDPMScheduler(prediction_type="v_prediction").config)),
    ("v_prediction", lambda: EulerDiscreteScheduler.from_config(ddim("v_prediction").config)),
]


@pytest.mark.parametrize("prediction_type,scheduler", PREDICTIONS,
                         ids=["flow", "eps-ddim", "v-ddim", "eps-swap", "v-swap", "v-euler"])
def test_flow_prediction_types_train_and_sample(prediction_type, scheduler):
    model = build("flow", scale=0, prediction_type=prediction_type).train()
    x, cond = data("flow"), text_cond()
    losses = train_steps(model, x, cond, steps=16)
    assert sum(losses[-4:]) < 0.9 * sum(losses[:4]), losses
    model.eval()
    out = generate_latents(model, scheduler=scheduler(), grid=GRID, batch=2, cond=cond, guidance_scale=2.0,
                           num_inference_steps=4, generator=gen(0))
    check_output("flow", out)
    again = generate_latents(model, scheduler=scheduler(), grid=GRID, batch=2, cond=cond, guidance_scale=2.0,
                             num_inference_steps=4, generator=gen(0))
    assert torch.equal(out, again)


@pytest.mark.parametrize("prediction_type,scheduler", PREDICTIONS[:3], ids=["flow", "eps", "v"])
def test_flow_given_frames_are_kept_exactly(prediction_type, scheduler):
    model = build("flow", prediction_type=prediction_type)
    given = data("flow", seed=4)
    mask = torch.tensor([[True, False, False], [True, False, True]])
    out = generate_latents(model, scheduler=scheduler(), grid=GRID, batch=2, cond=text_cond(), guidance_scale=3.0,
                           num_inference_steps=4, generator=gen(0), given_latents=given, given_mask=mask)
    check_output("flow", out)
    keep = mask[:, None, :, None, None].expand_as(out)
    assert torch.equal(out[keep], given[keep])
    assert differ(out[~keep], given[~keep])
    # the given frames condition the others (they are model input, not only pasted in)
    free = generate_latents(model, scheduler=scheduler(), grid=GRID, batch=2, cond=text_cond(), guidance_scale=3.0,
                            num_inference_steps=4, generator=gen(0))
    assert differ(out[:, :, 1], free[:, :, 1])
    x, ts = data("flow", seed=5), torch.tensor([500.0, 500.0])
    with torch.no_grad():  # the given latents' values are model input
        a = model(x, ts, text_cond(), given_latents=given, given_mask=mask).sample
        b = model(x, ts, text_cond(), given_latents=given + 1, given_mask=mask).sample
    assert differ(a, b)


def test_flow_wrong_scheduler_raises():
    flow, eps, v = (build("flow", prediction_type=k) for k in ("flow", "epsilon", "v_prediction"))
    for model, scheduler in ((flow, ddim("epsilon")), (eps, FlowMatchEulerDiscreteScheduler()),
                             (eps, ddim("v_prediction")), (v, ddim("epsilon")), (v, DDIMScheduler())):
        with pytest.raises(InvalidInputError, match="scheduler"):
            generate_latents(model, scheduler=scheduler, grid=GRID, batch=1, num_inference_steps=2, generator=gen(0))


def test_flow_bad_given_arguments_raise_invalid_input():
    model = build("flow")
    kw = dict(scheduler=FlowMatchEulerDiscreteScheduler(), grid=GRID, batch=2, num_inference_steps=2, generator=gen(0))
    with pytest.raises(InvalidInputError, match="given_latents"):
        generate_latents(model, given_mask=torch.ones(2, 3, dtype=torch.bool), **kw)
    with pytest.raises(InvalidInputError, match="given_mask"):
        generate_latents(model, given_latents=data("flow"),
                         given_mask=torch.ones(2, *GRID, dtype=torch.bool), **kw)


@pytest.mark.parametrize("patch_size", [(1, 2, 2), (2, 2, 2)])
def test_flow_patch_padding_on_an_odd_latent_grid(patch_size):
    odd = (3, 5, 5)
    model = build("flow", patch_size=patch_size)
    x = data("flow", grid=odd)
    out = model(x, torch.tensor([500.0, 100.0]), text_cond()).sample
    assert out.shape == x.shape
    loss, _ = model.loss(x, text_cond(), gen(0))
    assert torch.isfinite(loss)
    mask = torch.tensor([[True, False, False], [False, False, True]])
    lat = generate_latents(model, scheduler=FlowMatchEulerDiscreteScheduler(), grid=odd, batch=2, cond=text_cond(),
                           guidance_scale=2.0, num_inference_steps=3, generator=gen(0), given_latents=x,
                           given_mask=mask)
    assert lat.shape == (2, CHANNELS, *odd) and torch.isfinite(lat).all()
    keep = mask[:, None, :, None, None].expand_as(lat)
    assert torch.equal(lat[keep], x[keep])


@pytest.mark.parametrize("coarse_patch", [(1, 2, 2), (2, 2, 2)])
def test_flow_finer_patches_start_as_a_blocky_copy_of_the_coarse_model(coarse_patch):
    """init_from across patch sizes (load_coarser_patches, via copy_weights): on latents constant within each
    coarse patch the 1x1x1 model's token embeddings are the coarse model's repeated over the patch, its head gives
    the mean of the coarse head's cells, every other weight is copied; other changes are refused by name."""
    from vidgen.training.checkpoint import copy_weights
    coarse, fine = build("flow", patch_size=coarse_patch), build("flow", seed=1, patch_size=(1, 1, 1))
    copy_weights(fine, coarse, "coarse")
    pt, ph, pw = coarse_patch
    grid = (GRID[0] // pt + 1, 2, 2)  # coarse token grid
    x = torch.randn(2, 2 * CHANNELS + 1, *grid, generator=gen(0))
    blocky = x.repeat_interleave(pt, 2).repeat_interleave(ph, 3).repeat_interleave(pw, 4)
    tokens = coarse.patch(blocky).reshape(2, *grid, -1)
    expected = tokens.repeat_interleave(pt, 1).repeat_interleave(ph, 2).repeat_interleave(pw, 3).flatten(1, 3)
    torch.testing.assert_close(fine.patch(blocky), expected, atol=1e-5, rtol=1e-5)
    h = torch.randn(2, 5, fine.backbone_config.dim, generator=gen(1))
    cells = coarse.head(h).reshape(2, 5, CHANNELS, pt * ph * pw)
    torch.testing.assert_close(fine.head(h), cells.mean(-1), atol=1e-6, rtol=1e-5)
    rest = {k: v for k, v in coarse.state_dict().items() if not k.startswith(("patch.", "head."))}
    assert all(torch.equal(fine.state_dict()[k], v) for k, v in rest.items()) and len(rest) > 10
    with pytest.raises(ConfigError, match="only coarser patches"):
        copy_weights(build("flow", patch_size=coarse_patch), fine, "fine")  # fine -> coarse
    with pytest.raises(ConfigError, match="differs.*depth|depth.*differs|must match"):
        copy_weights(fine, build("flow", patch_size=coarse_patch, depth=1), "other depth")


def test_flow_init_from_across_weightless_architecture_keys():
    """A larger token extent (max_grid) and another attention layout shape no weight: init_from copies every weight
    (with finer patches too: the blocky copy), and still refuses an architecture with other weights."""
    from vidgen.training.checkpoint import copy_weights
    source = build("flow")
    wider = build("flow", seed=1, max_grid=(8, 16, 16), layout="window", window=(3, 3, 3))
    copy_weights(wider, source, "source")
    assert all(torch.equal(wider.state_dict()[k], v) for k, v in source.state_dict().items())
    finer = build("flow", seed=1, patch_size=(1, 1, 1), max_grid=(8, 16, 16))
    coarse = build("flow", patch_size=(1, 2, 2))
    copy_weights(finer, coarse, "coarse")
    assert torch.equal(finer.state_dict()["head.bias"], coarse.head.bias.reshape(CHANNELS, -1).mean(1))
    with pytest.raises(ConfigError, match="differs from the model this run builds .* in: architecture"):
        copy_weights(build("flow", max_grid=(8, 16, 16), depth=1), source, "other depth")


@pytest.mark.parametrize("kind", ["masked", "ar"])
def test_discrete_model_on_finer_ids_starts_from_the_one_id_per_token_model(kind):
    """init_from across id patches (load_other_ids, via copy_weights): a 1x2x2-patch model on a 2x-finer id grid
    has the source's backbone and conditioning; a token of all-special ids (MASK / BOS) enters the backbone as the
    source's special token did, so on an all-special input both backbones see identical features; the id
    embeddings and the head are fresh. Other changes are refused by name."""
    from vidgen.training.checkpoint import copy_weights
    source = build(kind)  # live weights: perturbed, no zero-initialised branch hides a block
    fine = build(kind, seed=1, patch_size=(1, 2, 2))
    fresh_rows = fine.token_embed.weight[:VOCAB].clone()
    copy_weights(fine, source, "source")
    rest = {k: v for k, v in source.state_dict().items() if not k.startswith(("token_embed.", "head."))}
    assert len(rest) > 10 and all(torch.equal(fine.state_dict()[k], v) for k, v in rest.items())
    assert torch.equal(fine.token_embed.weight[:VOCAB], fresh_rows)  # ids of the new tokenizer: fresh
    special = torch.full((1, 4), VOCAB)
    torch.testing.assert_close(fine.token_embed(fine.patch.offset(special)).sum(1),
                               source.token_embed(special[:, :1]).sum(1), atol=1e-6, rtol=1e-5)
    seen = {}
    for name, model in (("source", source), ("fine", fine)):
        model.head.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, args[0]))
    cond, drop = text_cond(1), torch.tensor([False])
    coarse_grid, fine_grid = (GRID[0], 2, 2), (GRID[0], 4, 4)
    with torch.no_grad():
        if kind == "masked":  # every id masked: each 1x2x2 token equals the source's MASK token
            source(torch.full((1, *coarse_grid), VOCAB), cond, drop)
            fine(torch.full((1, *fine_grid), VOCAB), cond, drop)
        else:  # token-causal: the first token sees only BOS, whatever the ids after it
            source(torch.randint(0, VOCAB, (1, *coarse_grid), generator=gen(3)), cond, drop)
            fine(torch.randint(0, VOCAB, (1, *fine_grid), generator=gen(4)), cond, drop)
            seen = {name: h[:, :1] for name, h in seen.items()}
    torch.testing.assert_close(seen["fine"], seen["source"], atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="depth"):
        copy_weights(build(kind, patch_size=(1, 2, 2), depth=1), source, "other depth")


def test_flow_on_other_latents_keeps_the_backbone_and_starts_its_patch_embedding_and_head_fresh():
    """init_from a flow model trained on another tokenizer's latents (load_other_latents): another channel count and
    patch; every backbone and conditioning weight is the source's, the patch embedding and head this model's own."""
    from vidgen.training.checkpoint import copy_weights
    source = build("flow")
    other = build("flow", seed=1, in_channels=2, patch_size=(1, 2, 2))
    own = {k: v.clone() for k, v in other.state_dict().items() if k.startswith(("patch.", "head."))}
    copy_weights(other, source, "source")
    rest = {k: v for k, v in source.state_dict().items() if not k.startswith(("patch.", "head."))}
    assert len(rest) > 10 and all(torch.equal(other.state_dict()[k], v) for k, v in rest.items())
    assert own and all(torch.equal(other.state_dict()[k], v) for k, v in own.items())
    with pytest.raises(ConfigError, match="depth"):
        copy_weights(build("flow", in_channels=2, depth=1), source, "other depth")


def test_flow_sampling_equals_a_plain_loop_written_out_here():
    """generate_latents against a plain loop: CFG as one batched pass over [null; cond], Euler steps."""
    model = build("flow", scale=0.1)
    cond, g = text_cond(), 2.5
    out = sample("flow", model, cond=cond, guidance_scale=g, steps=5)
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(5)
    latents = torch.randn(2, CHANNELS, *GRID, generator=gen(0))
    null = Conditioning(text=torch.zeros_like(cond.text), text_mask=cond.text_mask, pooled=torch.zeros_like(cond.pooled))
    both = Conditioning(text=torch.cat([null.text, cond.text]), text_mask=torch.cat([cond.text_mask] * 2),
                        pooled=torch.cat([null.pooled, cond.pooled]))
    drop = torch.tensor([True, True, False, False])
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = model(torch.cat([latents, latents]), t.expand(4), both, drop=drop).sample
            uncond, conditional = v.chunk(2)
            latents = scheduler.step(uncond + g * (conditional - uncond), t, latents).prev_sample
    torch.testing.assert_close(out, latents, atol=1e-5, rtol=1e-5)


def test_flow_legacy_self_condition_key_false_is_dropped_and_true_is_refused(tmp_path):
    """self_condition left the library: folders saved before carry "self_condition": false (loads as before);
    a self-conditioned model's folder is refused with a clear error, not a weight mismatch."""
    model = build("flow")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "self_condition": False}))
    loaded = FlowVideoTransformer.from_pretrained(tmp_path).eval()
    assert "self_condition" not in loaded.config
    assert torch.equal(sample("flow", loaded), sample("flow", model))
    (tmp_path / "config.json").write_text(json.dumps({**config, "self_condition": True}))
    with pytest.raises(ConfigError, match=r"config\.json: self_condition=true.*not supported.*experiments"):
        FlowVideoTransformer.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="self_condition"):
        FlowVideoTransformer.from_preset("tiny", self_condition=True)


def test_flow_callback_called_once_per_step_and_can_replace_latents():
    model, steps = build("flow"), []

    def callback(i, t, kw):
        steps.append(i)
        return {"latents": torch.zeros_like(kw["latents"])} if i == 3 else None

    out = sample("flow", model, steps=4, callback=callback)
    assert steps == [0, 1, 2, 3] and torch.equal(out, torch.zeros_like(out))


# ---------------------------------------------------------------------------------------------------- autoregressive
AR_CASES = {
    "full-g1": (dict(), dict(guidance_scale=1.0)),
    "full-g3-topk": (dict(), dict(guidance_scale=3.0, top_k=8)),
    "full-g3-topp-neg": (dict(), dict(guidance_scale=3.0, top_p=0.9, negative=text_cond(seed=7))),
    "spatiotemporal-g3": (dict(layout="spatiotemporal"), dict(guidance_scale=3.0)),
    "window-g1-topk": (dict(layout="window", window=(3, 3, 3)), dict(guidance_scale=1.0, top_k=5)),
    "frame_causal-g3-topp": (dict(layout="frame_causal"), dict(guidance_scale=3.0, top_p=0.8)),
    "cross-text-g3": (dict(text_conditioning="cross"), dict(guidance_scale=3.0, top_k=8)),
}


@pytest.mark.parametrize("case", list(AR_CASES))
def test_ar_cached_equals_uncached(case):
    arch, kw = AR_CASES[case]
    model, cond = build("ar", scale=0.1, **arch), text_cond()
    kw = dict(grid=GRID, batch=2, temperature=1.0, **kw)
    cached = generate_tokens(model, cond, generator=gen(3), use_cache=True, **kw)
    uncached = generate_tokens(model, cond, generator=gen(3), use_cache=False, **kw)
    check_output("ar", cached)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("use_cache", [True, False])
def test_ar_given_ids_continuation_keeps_given_frames(use_cache):
    model, given = build("ar"), data("ar", seed=9)[:, :2]
    out = generate_tokens(model, text_cond(), grid=GRID, batch=2, guidance_scale=3.0, generator=gen(0), given_ids=given,
                          use_cache=use_cache)
    check_output("ar", out)
    assert torch.equal(out[:, :2], given)
    # the continuation depends on the given frames
    other = generate_tokens(model, grid=GRID, batch=2, cond=text_cond(), guidance_scale=3.0, generator=gen(0),
                            given_ids=(given + 1) % VOCAB, use_cache=use_cache)
    assert not torch.equal(out[:, 2:], other[:, 2:])


@pytest.mark.parametrize("given_frames", [0, 1, 4])
def test_ar_sliding_context_beyond_max_grid(given_frames):
    model, t = build("ar"), 5  # max_grid[0] = 3 latent frames
    grid = (t, *GRID[1:])
    given = data("ar", seed=9, grid=grid)[:, :given_frames] if given_frames else None
    kw = dict(cond=text_cond(), guidance_scale=3.0, top_k=16, given_ids=given)
    out = generate_tokens(model, grid=grid, batch=2, generator=gen(0), **kw)
    check_output("ar", out, grid=grid)
    if given_frames:
        assert torch.equal(out[:, :given_frames], given)
    assert torch.equal(out, generate_tokens(model, grid=grid, batch=2, generator=gen(0), use_cache=False, **kw))
    assert not torch.equal(out, generate_tokens(model, grid=grid, batch=2, generator=gen(1), **kw))


def test_ar_sliding_context_is_the_last_max_grid_minus_one_frames():
    """Greedy decoding removes the RNG: each frame beyond max_grid[0] = 3 is what the model generates from the
    previous 2 frames placed at the start of a fresh window."""
    model, cond = build("ar", scale=0.1), text_cond()
    kw = dict(cond=cond, guidance_scale=2.0, temperature=0.0)
    out = generate_tokens(model, grid=(5, 4, 4), batch=2, generator=gen(0), **kw)
    assert torch.equal(out[:, :3], generate_tokens(model, grid=GRID, batch=2, generator=gen(0), **kw))
    for f in (3, 4):
        window = generate_tokens(model, grid=GRID, batch=2, generator=gen(0), given_ids=out[:, f - 2:f], **kw)
        assert torch.equal(window[:, 2], out[:, f]), f"frame {f}"


@pytest.mark.parametrize("grid,given_frames", [(GRID, 0), (GRID, 1), ((5, 4, 4), 2)])
def test_ar_iter_frames_chunks_concatenate_to_generate_tokens(grid, given_frames):
    model = build("ar")
    given = data("ar", seed=9, grid=grid)[:, :given_frames] if given_frames else None
    kw = dict(cond=text_cond(), guidance_scale=2.0, given_ids=given)
    chunks = list(iter_frames(model, grid=grid, batch=2, generator=gen(0), **kw))
    assert len(chunks) == grid[0]
    assert all(c.shape == (2, 1, *grid[1:]) and c.dtype == torch.long for c in chunks)
    assert torch.equal(torch.cat(chunks, 1), generate_tokens(model, grid=grid, batch=2, generator=gen(0), **kw))


def test_ar_iter_frames_does_not_change_the_callers_grad_mode():
    model = build("ar")
    assert torch.is_grad_enabled()
    for _ in iter_frames(model, grid=GRID, batch=1, generator=gen(0)):
        assert torch.is_grad_enabled()


def test_ar_kv_cache_is_not_in_the_state_dict():
    model = build("ar")
    keys = set(model.state_dict())
    assert not any("cache" in k for k in keys)
    assert list(model.buffers()) == []
    generate_tokens(model, grid=GRID, batch=2, cond=text_cond(), guidance_scale=3.0, generator=gen(0))
    assert set(model.state_dict()) == keys
    assert list(model.buffers()) == []
    from vidgen.attention.kv_cache import KVCache, ModelKVCache
    for module in model.modules():  # no module keeps a cache around after generation
        assert not any(isinstance(v, (KVCache, ModelKVCache)) for v in vars(module).values())


# ---------------------------------------------------------------------------------------------------- backbone / layouts
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_layout_builds_trains_and_samples(kind, layout):
    model = build(kind, layout=layout, window=(3, 3, 3))
    assert model.backbone_config.layout == layout
    model.train()
    loss, _ = model.loss(data(kind), text_cond(), gen(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    check_output(kind, sample(kind, model, cond=text_cond(), guidance_scale=2.0, steps=2))


@pytest.mark.parametrize("text_conditioning", ["prefix", "cross"])
def test_frame_causal_masked_model_earlier_frames_ignore_later_ones(text_conditioning):
    model = build("masked", scale=0.1, layout="frame_causal", text_conditioning=text_conditioning)
    cond, ids = text_cond(), data("masked")
    changed = ids.clone()
    changed[:, 2] = (changed[:, 2] + 7) % VOCAB
    with torch.no_grad():
        a, b = model(ids, cond)["logits"], model(changed, cond)["logits"]
    torch.testing.assert_close(a[:, :2], b[:, :2], atol=1e-6, rtol=0)
    assert (a[:, 2] - b[:, 2]).abs().max() > 1e-4
    # the full layout is not causal: the same change reaches frame 0 (so the check above can fail)
    full = build("masked", scale=0.1, text_conditioning=text_conditioning)
    with torch.no_grad():
        assert (full(ids, cond)["logits"][:, 0] - full(changed, cond)["logits"][:, 0]).abs().max() > 1e-4


def test_frame_causal_flow_model_earlier_frames_ignore_later_ones():
    model = build("flow", scale=0.1, layout="frame_causal")
    x = data("flow")
    changed = x.clone()
    changed[:, :, 1:] += 1.0
    ts = torch.tensor([300.0, 700.0])
    with torch.no_grad():
        a, b = model(x, ts, text_cond()).sample, model(changed, ts, text_cond()).sample
    torch.testing.assert_close(a[:, :, :1], b[:, :, :1], atol=1e-6, rtol=0)
    assert (a[:, :, 1:] - b[:, :, 1:]).abs().max() > 1e-4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ar_logits_are_token_causal(layout):
    model, cond = build("ar", scale=0.1, layout=layout, window=(3, 3, 3)), text_cond()
    ids = data("ar")
    j = 21  # flattened (t, h, w) position of the changed id
    changed = ids.clone().reshape(2, -1)
    changed[:, j] = (changed[:, j] + 5) % VOCAB
    changed = changed.reshape(ids.shape)
    with torch.no_grad():
        a = model(ids, cond)["logits"].reshape(2, -1, VOCAB)
        b = model(changed, cond)["logits"].reshape(2, -1, VOCAB)
    torch.testing.assert_close(a[:, : j + 1], b[:, : j + 1], atol=1e-6, rtol=0)  # position i sees ids < i
    assert (a[:, j + 1] - b[:, j + 1]).abs().max() > 1e-4


@pytest.mark.parametrize("text_conditioning", ["prefix", "cross"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(kind, text_conditioning, monkeypatch):
    model = build(kind, scale=0.1, text_conditioning=text_conditioning).train()
    x, cond = data(kind), text_cond()

    def loss_and_grads():
        model.zero_grad()
        loss, _ = model.loss(x, cond, gen(0))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_loss, ref_grads = loss_and_grads()
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    loss, grads = loss_and_grads()
    assert len(calls) == model.backbone_config.depth  # every block went through checkpoint
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=0, msg=name)


# ---------------------------------------------------------------------------------------------------- errors
def test_unknown_generator_layout_and_preset_raise_config_errors():
    assert G.generator_class("masked") is MaskedVideoTransformer
    with pytest.raises(ConfigError, match="generator"):
        G.generator_class("nope")
    with pytest.raises(ConfigError, match="layout"):
        MaskedVideoTransformer.from_preset("tiny", vocab_size=VOCAB, layout="diagonal")
    with pytest.raises(ConfigError, match="preset"):
        AutoregressiveVideoTransformer.from_preset("huge", vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="architecture"):
        FlowVideoTransformer.from_preset("tiny", architecture={"depht": 2})


@pytest.mark.parametrize("kind", ["masked", "ar"])
def test_discrete_generators_reject_continuous_and_mismatched_tokenizers(kind):
    model, x = build(kind), video()
    with pytest.raises(InvalidInputError, match="tokenizer"):
        model.check_tokenizer(tiny_vae())
    with pytest.raises(InvalidInputError, match="tokenizer"):
        model.encode_videos(tiny_vae(), x)
    with pytest.raises(InvalidInputError, match="tokenizer.*vocab_size"):
        model.encode_videos(tiny_vqvae(levels=(8, 5, 5, 5)), x)  # 1000 ids vs the model's 64


def test_flow_generator_rejects_discrete_and_mismatched_tokenizers():
    model, x = build("flow"), video()
    with pytest.raises(InvalidInputError, match="tokenizer"):
        model.check_tokenizer(tiny_vqvae())
    with pytest.raises(InvalidInputError, match="tokenizer"):
        model.encode_videos(tiny_vqvae(), x)
    with pytest.raises(InvalidInputError, match="tokenizer.*in_channels"):
        model.encode_videos(tiny_vae(latent_channels=8), x)


@pytest.mark.parametrize("kind", ["masked", "ar"])
def test_ids_out_of_range_raise(kind):
    model = build(kind)
    for bad in (-1, VOCAB, VOCAB + 1):
        ids = data(kind)
        ids[0, 0, 0, 0] = bad
        with pytest.raises(InvalidInputError, match=r"ids must be in \[0, 64\)"):
            model.loss(ids, text_cond(), gen(0))
        if kind == "masked":
            with pytest.raises(InvalidInputError, match="given_ids"):
                generate_ids(model, grid=GRID, batch=2, given_ids=ids, given_mask=task_mask("prediction"),
                             generator=gen(0))
        else:
            with pytest.raises(InvalidInputError, match="given_ids"):
                generate_tokens(model, grid=GRID, batch=2, given_ids=ids[:, :1], generator=gen(0))
    with pytest.raises(InvalidInputError, match="ids"):
        model.loss(data(kind).float(), None, gen(0))


def test_grid_larger_than_max_grid_raises():
    masked, flow, ar = build("masked"), build("flow", patch_size=(1, 1, 1)), build("ar")
    with pytest.raises(InvalidInputError, match="max_grid"):
        generate_ids(masked, grid=(4, 4, 4), batch=1, generator=gen(0))
    with pytest.raises(InvalidInputError, match="max_grid"):
        masked.loss(data("masked", grid=(3, 5, 4)), None, gen(0))
    with pytest.raises(InvalidInputError, match="max_grid"):
        generate_latents(flow, scheduler=FlowMatchEulerDiscreteScheduler(), grid=(4, 4, 4), batch=1, generator=gen(0))
    with pytest.raises(InvalidInputError, match="max_grid"):
        flow.loss(data("flow", grid=(3, 4, 5)), None, gen(0))
    with pytest.raises(InvalidInputError, match="max_grid"):  # frames may slide, height may not
        generate_tokens(ar, grid=(3, 5, 4), batch=1, generator=gen(0))
    with pytest.raises(InvalidInputError, match="max_grid"):
        ar.loss(data("ar", grid=(4, 4, 4)), None, gen(0))


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_num_inference_steps_must_be_a_positive_int(steps):
    with pytest.raises(InvalidInputError, match="num_inference_steps"):
        generate_ids(build("masked"), grid=GRID, batch=1, num_inference_steps=steps, generator=gen(0))
    with pytest.raises(InvalidInputError, match="num_inference_steps"):
        sample("flow", build("flow"), batch=1, steps=steps)


@pytest.mark.parametrize("kind", KINDS)
def test_negative_guidance_scale_raises(kind):
    with pytest.raises(InvalidInputError, match="guidance_scale"):
        sample(kind, build(kind), batch=1, cond=text_cond(1), guidance_scale=-1.0)
    with pytest.raises(InvalidInputError, match="guidance_scale"):
        sample(kind, build(kind), batch=1, cond=text_cond(1), guidance_scale=float("nan"))


# ---------------------------------------------------------------------------------------------------- sampler options
def test_samplers_take_only_the_model_and_the_conditioning_positionally():
    """A swapped positional argument would silently change the output: everything after the model, the conditioning
    and the sampling config is keyword-only."""
    masked, flow, ar = build("masked"), build("flow"), build("ar")
    with pytest.raises(TypeError):
        generate_ids(masked, None, GRID, 2)
    with pytest.raises(TypeError):
        generate_latents(flow, None, FlowMatchEulerDiscreteScheduler(), GRID, 2)
    with pytest.raises(TypeError):
        generate_tokens(ar, None, GRID, 2)
    with pytest.raises(TypeError):
        iter_frames(ar, None, GRID, 2)


@pytest.mark.parametrize("kind,option,value", [
    ("masked", "top_k", 0), ("masked", "top_k", 1.5), ("masked", "temperature", -1.0),
    ("masked", "temperature", (2.0, "x")), ("masked", "temperature", (1.0, 2.0, 3.0)),
    ("ar", "top_k", 0), ("ar", "top_p", 0.0), ("ar", "top_p", 1.5), ("ar", "temperature", -0.5),
    ("ar", "temperature", True),
])
def test_bad_sampler_options_are_refused_at_the_call_naming_the_option(kind, option, value):
    """Checked once, before any step: iter_frames refuses at the call, not at its first frame."""
    model = build(kind)
    with pytest.raises(InvalidInputError, match=rf"^{option} must be"):
        if kind == "ar":
            iter_frames(model, grid=GRID, batch=1, generator=gen(0), **{option: value})
        else:
            generate_ids(model, grid=GRID, batch=1, generator=gen(0), num_inference_steps=2, **{option: value})


def test_a_sampling_config_gives_the_samples_of_the_same_settings_as_keywords():
    """Each generator has one sampling function: a config object, keyword settings, or a config with keyword
    overrides give the same numbers; a config of another generator is refused."""
    from vidgen.generators import AutoregressiveSamplingConfig, FlowSamplingConfig, MaskedSamplingConfig
    cond = text_cond()
    masked, flow, ar = build("masked"), build("flow"), build("ar")
    config = MaskedSamplingConfig(num_inference_steps=3, guidance_scale=2.0, top_k=2)
    ids = generate_ids(masked, cond, config, grid=GRID, batch=2, generator=gen(0))
    assert torch.equal(ids, sample("masked", masked, cond=cond, guidance_scale=2.0, steps=3, top_k=2))
    assert torch.equal(ids, generate_ids(masked, cond, config.replace(top_k=5), grid=GRID, batch=2, generator=gen(0),
                                         top_k=2))
    lat = generate_latents(flow, cond, FlowSamplingConfig(num_inference_steps=3, guidance_scale=2.0), grid=GRID,
                           batch=2, scheduler=FlowMatchEulerDiscreteScheduler(), generator=gen(0))
    assert torch.equal(lat, sample("flow", flow, cond=cond, guidance_scale=2.0, steps=3))
    frames = iter_frames(ar, cond, AutoregressiveSamplingConfig(guidance_scale=2.0, top_p=0.9), grid=GRID, batch=2,
                         generator=gen(0))
    assert torch.equal(torch.cat(list(frames), 1), sample("ar", ar, cond=cond, guidance_scale=2.0, top_p=0.9))
    with pytest.raises(InvalidInputError, match="config must be a MaskedSamplingConfig, got FlowSamplingConfig"):
        generate_ids(masked, cond, FlowSamplingConfig(), grid=GRID, batch=2)


# ---------------------------------------------------------------------------------------------------- masked id patches
def test_id_patches_group_every_id_once_and_unpatchify_puts_each_prediction_back():
    """IdPatches on an odd grid: every id lands in exactly one (token, slot), pads are the pad id, and logits laid out
    per (token, slot) come back to the id they belong to."""
    from vidgen.generators.embeddings import IdPatches
    patches = IdPatches((1, 2, 2), num_ids=1000, pad_id=999)
    ids = torch.arange(2 * 3 * 5 * 7).reshape(2, 3, 5, 7)  # (B, t, h, w), odd h and w
    slots = patches.slots(ids)  # (B, N, 4) rows = id + slot * num_ids
    assert slots.shape == (2, 3 * 3 * 4, 4)
    raw = slots - torch.arange(4) * 1000
    assert sorted(raw[raw != 999].tolist()) == ids.flatten().tolist()
    back = patches.unpatchify(raw.float()[..., None].reshape(2, 36, 4), (3, 5, 7))  # one "logit" per id: the id
    assert torch.equal(back[..., 0].long(), ids)


@pytest.mark.parametrize("grid", [(3, 4, 4), (2, 3, 5)])
def test_masked_with_id_patches_trains_samples_and_keeps_given_tokens(grid):
    """A masked model whose backbone tokens each carry 1x2x2 ids: logits per id, the loss falls, sampling keeps given
    tokens exactly, and it saves and loads with its patch size."""
    model = build("masked", patch_size=(1, 2, 2), max_grid=(3, 2, 3))
    ids = data("masked", grid=grid)
    assert model(ids, text_cond())["logits"].shape == (2, *grid, VOCAB)
    losses = train_steps(model, ids, text_cond(), 40)
    assert sum(losses[-4:]) < 0.9 * sum(losses[:4])
    model.eval()
    mask = torch.zeros(2, *grid, dtype=torch.bool)
    mask[:, 0] = True  # frame prediction
    out = generate_ids(model, text_cond(), grid=grid, batch=2, guidance_scale=2.0, generator=gen(0),
                       num_inference_steps=4, given_ids=ids, given_mask=mask)
    assert out.shape == (2, *grid) and torch.equal(out[mask], ids[mask]) and out.max() < VOCAB
    with pytest.raises(InvalidInputError, match="max_grid"):
        generate_ids(model, grid=(3, 6, 4), batch=1, generator=gen(0))  # 3x3x2 patches: h 3 > max_grid 2


def test_masked_patch_size_round_trips_and_bad_patch_size_is_named(tmp_path):
    model = build("masked", patch_size=(1, 2, 2))
    model.save_pretrained(tmp_path)
    loaded = MaskedVideoTransformer.from_pretrained(tmp_path).eval()
    assert tuple(loaded.patch.patch_size) == (1, 2, 2)
    ids = data("masked")
    assert torch.equal(loaded(ids)["logits"], model(ids)["logits"])
    with pytest.raises(InvalidInputError, match="patch_size"):
        build("masked", patch_size=(1, 0, 2))


# ---------------------------------------------------------------------------------------------------- AR id patches
def _patched_ar(**kw):
    return build("ar", scale=0.1, patch_size=(1, 2, 2), max_grid=(3, 2, 2), **kw)


@pytest.mark.parametrize("layout", ["full", "spatiotemporal"])
def test_ar_with_id_patches_cached_equals_uncached_and_slides(layout):
    """Each AR token carries a 1x2x2 patch of ids: the cached decoder equals the whole-sequence reference, also
    past max_grid[0] (the sliding context) and with given frames kept exactly."""
    model, cond = _patched_ar(layout=layout), text_cond()
    for grid, given in ((GRID, None), ((5, 4, 4), data("ar", seed=9, grid=(5, 4, 4))[:, :1])):
        kw = dict(grid=grid, batch=2, guidance_scale=3.0, top_k=8, given_ids=given)
        cached = generate_tokens(model, cond, generator=gen(3), **kw)
        check_output("ar", cached, grid=grid)
        assert torch.equal(cached, generate_tokens(model, cond, generator=gen(3), use_cache=False, **kw))
        if given is not None:
            assert torch.equal(cached[:, :1], given)


def test_ar_with_id_patches_is_causal_per_patch_and_learns():
    """Token i (a 2x2 patch of ids) sees only the patches before it: changing an id changes the logits of later
    patches only; and the loss falls on a fixed batch."""
    model, cond, ids = _patched_ar(), text_cond(), data("ar")
    assert model(ids, cond)["logits"].shape == (2, *GRID, VOCAB)
    changed = ids.clone()
    changed[:, 1, 0, 1] = (changed[:, 1, 0, 1] + 5) % VOCAB  # in the first patch of frame 1 (token 4)
    with torch.no_grad():
        a, b = model(ids, cond)["logits"], model(changed, cond)["logits"]
    same = torch.zeros(GRID, dtype=torch.bool)
    same[0], same[1, :2, :2] = True, True  # frame 0 and the changed patch itself (token 4) do not see it
    torch.testing.assert_close(a[:, same], b[:, same], atol=1e-6, rtol=0)
    assert (a[:, 1, :2, 2:] - b[:, 1, :2, 2:]).abs().max() > 1e-4  # token 5 does
    losses = train_steps(model.train(), ids, cond, 30)
    assert sum(losses[-4:]) < 0.9 * sum(losses[:4])


def test_ar_patch_size_errors_are_named():
    with pytest.raises(InvalidInputError, match="patch_size"):
        build("ar", patch_size=(2, 2, 2))  # the context slides by latent frames
    with pytest.raises(InvalidInputError, match="not a multiple"):
        generate_tokens(_patched_ar(), grid=(3, 4, 3), batch=1, generator=gen(0))
