"""Helpers of the sequence-parallel tests: run a function in 2 gloo processes, and the cases they compare.

Each worker builds the same tiny live model and inputs from fixed seeds, computes the single-process reference in
its own process (the model as it is, no process group involved), then the same call split over the sequence-parallel
group, and returns what it measured; rank 0's report comes back to the test."""
from __future__ import annotations

import os
import tempfile
import traceback

import torch

import vidgen.generators  # noqa: F401  imported before forking, so the workers start with it
import vidgen.generators.flow  # noqa: F401
import vidgen.generators.masked  # noqa: F401
import vidgen.pipelines  # noqa: F401

WORLD = 2
ATOL, RTOL = 2e-5, 1e-4  # fp32: the split changes GEMM and reduction order, not the math


def run_group(fn, *args, world: int = WORLD, timeout: float = 300):
    """``fn(rank, world, *args)`` in ``world`` processes joined by gloo; returns rank 0's result. A worker's exception
    is re-raised here with its traceback. Forked where the platform allows (the workers start with vidgen already
    imported: seconds instead of an interpreter start and imports each). A fork copies the locks other threads hold,
    so inductor's compile workers, left running by an in-process torch.compile, are shut down first (a compiling
    child otherwise waits on their locks forever), and any other thread but tqdm's idle monitor means a spawn. A fork
    whose workers find autograd's threads started in this process (torch refuses their backward) is run again
    spawned."""
    method = "fork" if _fork_is_safe() else "spawn"
    try:
        return _run_group(method, fn, args, world, timeout)
    except AssertionError as err:  # a parent whose autograd started its device threads cannot fork a backward
        if method != "fork" or AUTOGRAD_FORK not in str(err):
            raise
        return _run_group("spawn", fn, args, world, timeout)


AUTOGRAD_FORK = "Unable to handle autograd's threading in combination with fork-based multiprocessing"


def _run_group(method: str, fn, args, world: int, timeout: float):
    import multiprocessing as mp
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.get_context(method)
        queue = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(fn, rank, world, os.path.join(tmp, "rdzv"), queue, args))
                 for rank in range(world)]
        for p in procs:
            p.start()
        results = {}
        try:
            for _ in range(world):
                rank, ok, value = queue.get(timeout=timeout)
                results[rank] = (ok, value)
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        for rank in sorted(results):
            if not results[rank][0]:
                raise AssertionError(f"rank {rank} failed:\n{results[rank][1]}")
        return results[0][1]


def _fork_is_safe() -> bool:
    import multiprocessing as mp
    import sys
    import threading
    if "fork" not in mp.get_all_start_methods():
        return False
    if "torch._inductor.async_compile" in sys.modules:
        sys.modules["torch._inductor.async_compile"].shutdown_compile_workers()
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    return all(t.name == "tqdm_monitor" for t in others)


def _worker(fn, rank, world, rdzv, queue, args):
    import torch.distributed as dist
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"file://{rdzv}", rank=rank, world_size=world)
        try:
            queue.put((rank, True, fn(rank, world, *args)))
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported to the test
        queue.put((rank, False, traceback.format_exc()))


def tiny_generator(kind: str, **arch):
    """A tiny live generator (perturbed weights) of ``kind`` with a text prefix of 5 tokens."""
    from vidgen.generators import AutoregressiveVideoTransformer, FlowVideoTransformer, MaskedVideoTransformer
    from vidgen.testing import perturb_weights
    torch.manual_seed(0)
    arch = {"text_dim": 12, "max_text_tokens": 5, "max_grid": (8, 8, 8), **arch}
    if kind == "flow":
        model = FlowVideoTransformer.from_preset("tiny", in_channels=3, **arch)
    else:
        cls = MaskedVideoTransformer if kind == "masked" else AutoregressiveVideoTransformer
        model = cls.from_preset("tiny", vocab_size=11, **arch)
    return perturb_weights(model, scale=0.05)


def tiny_batch(kind: str, grid, batch: int = 2, seed: int = 3):
    """(x, Conditioning): latents (B, 3, t, h, w) for flow, ids (B, t, h, w) otherwise, with text conditioning."""
    from vidgen.generators import Conditioning
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *grid, generator=g) if kind == "flow" else torch.randint(0, 11, (batch, *grid),
                                                                                         generator=g)
    text = torch.randn(batch, 4, 12, generator=g)
    cond = Conditioning(text=text, text_mask=torch.ones(batch, 4, dtype=torch.bool), pooled=text.mean(1))
    return x, cond


def _loss_grads(model, x, cond, seed: int, sp=None):
    model.zero_grad(set_to_none=True)
    loss, _ = model.loss(x, cond, torch.Generator().manual_seed(seed), sp=sp)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worst(a: dict, b: dict, what: str) -> float:
    """The largest |a - b|; asserts every entry is within ATOL + RTOL * |b|."""
    assert a.keys() == b.keys(), (what, sorted(set(a) ^ set(b)))
    worst = 0.0
    for name in a:
        diff = (a[name] - b[name]).abs()
        assert (diff <= ATOL + RTOL * b[name].abs()).all(), f"{what}: {name} differs by {diff.max().item():.3g}"
        worst = max(worst, diff.max().item())
    return worst


def train_step_case(rank, world, kind: str, grid, arch: dict, sp_size: int = 2, checkpointing: bool = False,
                    compile: bool = False):
    """One training step (loss, gradients, AdamW update) with and without sequence parallelism (and gradient
    checkpointing, which recomputes the blocks and their all-to-alls in the backward); returns the worst differences
    and the gradient's size (not vacuous)."""
    import copy

    import torch.distributed as dist

    from vidgen.parallel import new_sequence_parallel
    model = tiny_generator(kind, **arch)
    if checkpointing:
        model.enable_gradient_checkpointing()
    x, cond = tiny_batch(kind, grid)
    ref_model = copy.deepcopy(model)
    ref_loss, ref_grads = _loss_grads(ref_model, x, cond, seed=7)
    sp = new_sequence_parallel(sp_size)
    try:
        if compile:  # what the trainer's compile=true does: the backbone through inductor, collectives inside
            model.backbone.compile()
        loss, grads = _loss_grads(model, x, cond, seed=7, sp=sp)
        for g in grads.values():  # what DDP does over the world: the mean of the ranks' gradients
            dist.all_reduce(g)
            g /= world
        report = {"loss": abs(loss - ref_loss).item(), "grads": _worst(grads, ref_grads, "gradients"),
                  "grad_scale": max(g.abs().max().item() for g in ref_grads.values())}
        assert report["loss"] <= ATOL, report
        for m, gr in ((model, grads), (ref_model, ref_grads)):
            for n, p in m.named_parameters():
                p.grad = gr.get(n)
            opt = torch.optim.AdamW(m.parameters(), lr=1e-3, eps=1e-6)  # eps: no sign flips of ~0 grads
            opt.step()
        report["weights"] = _worst(dict(model.named_parameters()), dict(ref_model.named_parameters()), "weights")
        return report
    finally:
        sp.close()


def sample_case(rank, world, kind: str, grid, arch: dict, sp_size: int = 2):
    """Flow or masked sampling (text, CFG, a few steps) with and without sequence parallelism, same seed: returns
    the largest difference to the single-process sample and between the ranks (0: every rank has the same frames)."""
    import torch.distributed as dist

    from vidgen.generators.flow import generate_latents
    from vidgen.generators.masked import generate_ids
    from vidgen.parallel import new_sequence_parallel
    model = tiny_generator(kind, **arch).eval()
    _, cond = tiny_batch(kind, grid)
    sample = generate_latents if kind == "flow" else generate_ids

    def run(sp=None):
        return sample(model, cond, grid=grid, batch=2, num_inference_steps=4, guidance_scale=2.0,
                      generator=torch.Generator().manual_seed(5), sp=sp).float()
    ref = run()
    sp = new_sequence_parallel(sp_size)
    try:
        out = run(sp)
        every = [torch.empty_like(out) for _ in range(world)]
        dist.all_gather(every, out)
        return {"vs_one_process": (out - ref).abs().max().item(),
                "between_ranks": max((e - out).abs().max().item() for e in every),
                "scale": ref.abs().max().item()}
    finally:
        sp.close()


def pipeline_case(rank, world, kind: str):
    """A tiny class-conditioned flow or masked pipeline called with ``sp_size=2`` and without, same seed: returns
    the largest difference of the frames to the single-process call and between the ranks, and the modules (none) and
    pipeline attributes (none) that hold a sequence-parallel group after the call."""
    import torch.distributed as dist
    from diffusers import FlowMatchEulerDiscreteScheduler

    from vidgen.generators import FlowVideoTransformer, MaskedVideoTransformer, make_scheduler
    from vidgen.parallel import SequenceParallel
    from vidgen.pipelines import FlowVideoPipeline, MaskedVideoPipeline
    from vidgen.testing import perturb_weights
    from vidgen.tokenizers import CausalVAE, CausalVQVAE
    torch.manual_seed(0)
    arch = dict(num_classes=3, max_grid=(4, 8, 8), layout="window", window=(3, 3, 3))
    if kind == "flow":
        tok = CausalVAE.from_preset("tiny")
        gen = FlowVideoTransformer.from_preset("tiny", in_channels=tok.config.latent_channels, **arch)
        perturb_weights(tok, gen)
        pipe = FlowVideoPipeline(tok, gen, FlowMatchEulerDiscreteScheduler())
    else:
        tok = CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4))
        gen = MaskedVideoTransformer.from_preset("tiny", vocab_size=tok.vocab_size, **arch)
        perturb_weights(tok, gen)
        pipe = MaskedVideoPipeline(tok, gen, make_scheduler(gen))
    pipe.set_progress_bar_config(disable=True)

    def call(**sp):
        return torch.as_tensor(pipe(class_labels=torch.tensor([1, 2]), num_frames=9, height=40, width=48,
                                    num_inference_steps=3, guidance_scale=2.0,
                                    generator=torch.Generator().manual_seed(4), **sp).frames)
    ref, out = call(), call(sp_size=2)
    every = [torch.empty_like(out) for _ in range(world)]
    dist.all_gather(every, out)
    return {"vs_one_process": (out - ref).abs().max().item(),
            "between_ranks": max((e - out).abs().max().item() for e in every),
            "split_after": [name for name, m in [("pipe", pipe), *pipe.transformer.named_modules()]
                            if any(isinstance(v, SequenceParallel) for v in vars(m).values())] or None}
