"""Image-to-video fine-tuning: each clip's first frame as the model's condition, built as the folder's own diffusers
pipeline class builds it at inference.

The shards keep each clip's frame 0 as an RGB image (``vidgen data encode --first-frames``): the picture a user
passes as ``image=``. At every step, :class:`FirstFrameCondition` turns each clip's frame into the transformer's extra
inputs with the family's :meth:`~vidgen.families.Family.prepare_condition` (for ``WanImageToVideoPipeline``: the
pipeline's ``prepare_latents``, i.e. the VAE latents of the frame followed by zero frames plus the first-frame mask
channels, and ``encode_image``'s CLIP embeddings where the folder has an image encoder), so training sees exactly the
condition sampling gives the transformer. The frozen VAE and image encoder run on the training device, without
gradients. :func:`model_inputs` hands those inputs to every call of the transformer during one step (the student, the
teacher and the critic of a distillation alike).
"""
from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import torch

from vidgen.errors import ShardError, UnsupportedError


@contextmanager
def model_inputs(models, inputs: dict):
    """Every call of each of ``models`` (``DiffusersVideoTransformer``) inside the block gets ``inputs`` as extra
    keyword arguments of its family's model call."""
    saved = [dict(m.call_options) for m in models]
    for m in models:
        m.call_options.update(inputs)
    try:
        yield
    finally:
        for m, options in zip(models, saved):
            m.call_options = options


def needs_first_frames(family, pipe) -> bool:
    """Whether the loaded pipeline ``pipe`` is a conditioned class of ``family`` that trains on first frames; its
    conditioned classes that cannot be trained are refused by name."""
    name = type(pipe).__name__
    spec = family.conditioned.get(name)
    if spec is None:
        return False
    if not spec.trains:
        raise UnsupportedError(f"pipeline: fine-tuning a {name} folder is not built (fine-tuning from first frames is "
                               f"built for {[n for n, s in family.conditioned.items() if s.trains] or 'no class'} of "
                               f"this family); fine-tune the family's {family.pipeline} folder instead")
    return True


class FirstFrameCondition:
    """The transformer's condition inputs for a batch of first frames (see the module docstring)."""

    def __init__(self, pipe, family, vae, device):
        self.pipe, self.family, self.device = pipe, family, torch.device(device)
        self.temporal, self.spatial = vae.temporal_compression_ratio, vae.spatial_compression_ratio
        family.check_first_frame_training(pipe)
        for name in ("vae", "image_encoder"):
            part = getattr(pipe, name, None)
            if part is not None:
                part.to(self.device).eval().requires_grad_(False)

    def check_shards(self, dataset, root) -> None:
        """The shards hold first frames, in buckets whose frames the class encodes in whole latent frames, and the
        condition's latent grid is the clips'; one condition is built per bucket to check it."""
        name = type(self.pipe).__name__
        if not dataset.info.get("first_frames"):
            raise ShardError(f"data.root={root}: the shards hold no first frames, which {name} is fine-tuned on; "
                             f"encode them again with `vidgen data encode ... --first-frames`")
        for bucket, shape in dataset.shapes.items():
            frames, height, width = (int(v) for v in bucket.split("x"))
            if (frames - 1) % self.temporal or height % self.spatial or width % self.spatial:
                raise ShardError(f"data.root={root}: bucket {bucket}: {name} encodes its first frame in whole latent "
                                 f"frames and cells; encode buckets of 1 + a multiple of {self.temporal} frames and "
                                 f"sizes in multiples of {self.spatial} (e.g. "
                                 f"{(frames - 1) // self.temporal * self.temporal + 1}x"
                                 f"{height // self.spatial * self.spatial}x{width // self.spatial * self.spatial})")
            inputs = self(torch.zeros(1, height, width, 3, dtype=torch.uint8), bucket, tuple(shape))
            grid = tuple(inputs["condition"].shape[-3:]) if inputs.get("condition") is not None else None
            if grid is not None and grid != tuple(shape[-3:]):
                raise ShardError(f"data.root={root}: bucket {bucket}: the clips' latent grid is {tuple(shape[-3:])}, "
                                 f"but {name}'s first-frame condition is {grid}; encode the shards with this "
                                 f"folder's VAE (--tokenizer FOLDER/vae)")

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor, bucket: str, shape) -> dict:
        """``frames`` (B, H, W, 3) uint8 of clips of ``bucket`` (latents ``shape`` (C, t, h, w)) -> the model's
        condition inputs, batched."""
        from PIL import Image
        num_frames, height, width = (int(v) for v in bucket.split("x"))
        parts = []
        for frame in frames:
            call = SimpleNamespace(image=Image.fromarray(frame.numpy()), last_image=None, video=None,
                                   num_frames=num_frames, height=height, width=width)
            self.family.check_condition(self.pipe, call)
            start = torch.zeros(1, *shape, device=self.device)  # the noise is the loss's: none is drawn here
            prepared = self.family.prepare_condition(self.pipe, call, grid=tuple(shape[-3:]), batch=1, generator=None,
                                                     device=self.device, scheduler=self.pipe.scheduler, steps=1,
                                                     latents=start)
            if prepared.finish is not None or prepared.clamp is not None or prepared.timesteps is not None:
                raise UnsupportedError(f"pipeline: {type(self.pipe).__name__} with this config gives its image by "
                                       "replacing latent frames (a per-token timestep model), whose loss would have to "
                                       "leave those frames out; fine-tuning it is not built")
            parts.append(prepared.model_kwargs)
        return {k: None if parts[0][k] is None else torch.cat([p[k] for p in parts]) for k in parts[0]}
