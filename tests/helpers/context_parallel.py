"""Workers of the context-parallel tests (``pipe(..., sp_size=2)`` on a diffusers-backed pipeline, run by
:func:`helpers.sequence_parallel.run_group`): each rank loads the same tiny folder, samples the single-process
reference itself, then the same call split over the world, and reports the differences."""
from __future__ import annotations

import torch

KW = dict(num_frames=9, height=32, width=32, num_inference_steps=3, guidance_scale=4.0, output_type="pt")


def pipeline_case(rank, world, folder: str, sp_size: int = 2, kw: dict = None, image: bool = False):
    """Frames of ``load_pipeline(folder)`` with ``sp_size`` against ``sp_size=1``, the tokens each rank's first block
    saw in both, and the largest difference between the ranks' frames; ``image``: a seeded random image as
    ``image=`` (an image-to-video folder)."""
    import numpy as np
    import torch.distributed as dist
    from PIL import Image

    from vidgen.pipelines import load_pipeline
    pipe = load_pipeline(folder, dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    seen = []
    blocks = getattr(pipe.transformer, "blocks", None) or pipe.transformer.transformer_blocks  # Wan / LTX-Video
    blocks[0].norm1.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    kw = {**KW, **(kw or {})}
    if image:
        pixels = np.random.RandomState(0).rand(kw["height"], kw["width"], 3) * 255
        kw["image"] = Image.fromarray(pixels.astype("uint8"))

    def run(sp):
        seen.clear()
        frames = pipe("a red fox running", generator=torch.Generator().manual_seed(0), sp_size=sp, **kw).frames
        return frames, sorted(set(seen))
    ref, whole = run(1)
    out, split = run(sp_size)
    again, whole_after = run(1)  # the model is whole again after the call
    every = [torch.empty_like(out) for _ in range(world)]
    dist.all_gather(every, out.contiguous())
    return {"vs_one_process": (out - ref).abs().max().item(), "scale": ref.abs().max().item(),
            "between_ranks": max((e - out).abs().max().item() for e in every),
            "after": (again - ref).abs().max().item(), "tokens": (whole, split, whole_after)}


def uneven_case(rank, world, folder: str):
    """A call whose 9 tokens 2 processes cannot split equally: the refusal's message on this rank."""
    from vidgen.pipelines import load_pipeline
    pipe = load_pipeline(folder, dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe("a fox", num_frames=1, height=48, width=48, num_inference_steps=1, sp_size=2)
    except Exception as err:  # noqa: BLE001 - reported to the test
        assert pipe.transformer._parallel_config is None  # undone after the refusal too
        return f"{type(err).__name__}: {err}"
    return "sampled"
