"""``pipe(..., sp_size=P)`` on a :class:`~vidgen.pipelines.DiffusersVideoPipeline`: each clip's tokens split over
``P`` processes by diffusers' own context-parallel engine (``model.enable_parallelism(config=ContextParallelConfig(
...))`` with the transformer's ``_cp_plan``), for the call only.

- Ulysses (``ulysses_degree=P``) where ``P`` divides the transformer's attention heads and the clip's tokens (an
  uneven token count is refused by name at the first model call).
- Ring (``ring_degree=P``) where it does not. Ring attention merges the ranks' partial attentions by their
  log-sum-exp, which diffusers' ``native`` backend (the only one on CPU) does not return (``return_lse``): ring is
  refused by name there; on a GPU set a flash / cuDNN / sage backend first (``pipe.transformer.set_attention_backend(
  "flash")``).
- A world larger than ``P`` (data parallel x ``P``) gets a ``("dp", "ring", "ulysses")`` device mesh: each group of
  ``P`` consecutive ranks splits one clip, as vidgen's own Ulysses groups do (:mod:`vidgen.parallel.groups`).

vidgen's own pipelines keep vidgen's Ulysses (:mod:`vidgen.pipelines.sequence_parallel`); families whose diffusers
transformer has no ``_cp_plan`` (CogVideoX, HunyuanVideo, Mochi in diffusers 0.42), or one that fails there
(a family's ``refused["context_parallel"]``), are refused by name. Every rank
computes the same frames (the output is gathered at ``proj_out``; noise comes from the caller's seeded generators);
write files on rank 0 only. diffusers calls the API experimental; the undo after the call uses its private hook
registry (0.42 has no ``disable_parallelism``)."""
from __future__ import annotations

import contextlib
import unittest.mock

import torch
import torch.distributed as dist

from vidgen.errors import ConfigError, UnsupportedError
from vidgen.families import transformer_family
from vidgen.parallel import check_sp_size
from vidgen.parallel.groups import launched_default_group

#: the attention backends whose forward returns the log-sum-exp ring attention merges by (diffusers 0.42: the
#: context-parallel backends other than ``native`` / ``_native_npu``)
RING_BACKENDS = ("flash", "flash_hub", "flash_varlen_hub", "_flash_3_hub", "_flash_3_varlen_hub", "_native_cudnn",
                 "_native_flash", "sage", "sage_hub")


def _models(pipe) -> list:
    return [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]


def attention_backend(model) -> str:
    """The diffusers attention backend ``model``'s attention runs (its processors', else diffusers' active one)."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    for module in model.modules():
        backend = getattr(getattr(module, "processor", None), "_attention_backend", None)
        if backend is not None:
            return getattr(backend, "value", str(backend))
    backend, _ = _AttentionBackendRegistry.get_active_backend()
    return getattr(backend, "value", str(backend))


def parallel_config(model, sp_size: int):
    """The :class:`diffusers.ContextParallelConfig` of ``model`` over ``sp_size`` processes (module docstring), or
    a named refusal: :class:`~vidgen.errors.UnsupportedError` for a transformer without a context-parallel plan, a
    backend without context parallelism, or ring attention where the backend has no log-sum-exp."""
    from diffusers import ContextParallelConfig
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
    name = type(model).__name__
    if getattr(model, "_cp_plan", None) is None or not hasattr(model, "enable_parallelism"):
        raise UnsupportedError(f"sp_size={sp_size}: diffusers' {name} has no context-parallel plan (_cp_plan) to "
                               "split its tokens by; call it with sp_size=1")
    family = transformer_family(model)
    if family is not None and "context_parallel" in family.refused:  # a plan diffusers has but cannot run
        raise UnsupportedError(f"sp_size={sp_size}: diffusers' {name} has a context-parallel plan, but "
                               f"{family.refused['context_parallel']}; call it with sp_size=1")
    backend = attention_backend(model)
    if not _AttentionBackendRegistry._is_context_parallel_available(AttentionBackendName(backend)):
        raise UnsupportedError(f"sp_size={sp_size}: {name}'s attention backend {backend!r} has no context "
                               f"parallelism in diffusers; set one that has (native, flash, _native_cudnn, sage: "
                               f"pipe.transformer.set_attention_backend(...))")
    heads = model.config.num_attention_heads
    if heads % sp_size == 0:
        return ContextParallelConfig(ulysses_degree=sp_size) if sp_size > 1 else None
    if backend not in RING_BACKENDS:
        where = "the only backend on CPU; " if not torch.cuda.is_available() else ""
        raise UnsupportedError(f"sp_size={sp_size}: {name} has {heads} attention heads, not a multiple of "
                               f"{sp_size}, so its tokens would be split by ring attention, which merges partial "
                               f"attentions by their log-sum-exp; diffusers' {backend!r} attention ({where}no "
                               f"return_lse) does not return it. Use an sp_size that divides {heads} (Ulysses), or "
                               f"on a GPU a backend with return_lse (flash, _native_cudnn, _native_flash, ...)")
    return ContextParallelConfig(ring_degree=sp_size)


def check_context_parallel(pipe, sp_size: int) -> None:
    """The refusals of :func:`parallel_config` for every transformer of ``pipe``, before any process group."""
    check_sp_size(sp_size)
    for model in _models(pipe) if sp_size > 1 else ():
        parallel_config(model, sp_size)


def _mesh(pipe, config, sp_size: int):
    """None (diffusers builds the ``(ring, ulysses)`` mesh of the whole world) when the world is ``sp_size``; else a
    ``(dp, ring, ulysses)`` mesh, built once per pipeline and world (a mesh makes process groups)."""
    world = dist.get_world_size()
    if world == sp_size:
        return None
    key = (id(dist.group.WORLD), world, config.ring_degree, config.ulysses_degree)
    meshes = pipe.__dict__.setdefault("_context_parallel_meshes", {})
    if key not in meshes:
        meshes[key] = dist.device_mesh.init_device_mesh(
            torch._C._get_accelerator().type, (world // sp_size, config.ring_degree, config.ulysses_degree),
            mesh_dim_names=("dp", "ring", "ulysses"))
    return meshes[key]


def _enable(model, config) -> None:
    # diffusers 0.42 places each rank on `rank % torch.accelerator.device_count()`, which is a ZeroDivisionError on a
    # machine without an accelerator (count 0; the accelerator type is then "cpu"). Device index 0 of "cpu" is what
    # it means there, so the count reads 1 for this call only; on a GPU nothing is patched.
    if torch._C._get_accelerator().type == "cpu" and torch.accelerator.device_count() == 0:
        with unittest.mock.patch.object(torch.accelerator, "device_count", lambda: 1):
            model.enable_parallelism(config=config)
    else:
        model.enable_parallelism(config=config)


def _disable(model) -> None:
    """Undo :func:`_enable` (diffusers 0.42 has no public undo): the plan's split / gather hooks removed, the
    attention processors and the model without the config, so the model runs whole again (and can be split again)."""
    from diffusers.hooks.context_parallel import remove_context_parallel
    remove_context_parallel(model, model._cp_plan)
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if hasattr(processor, "_parallel_config"):
            processor._parallel_config = None
    model._parallel_config = None


def _check_tokens(sp_size: int):
    """A forward pre-hook (it sees the whole input, before diffusers' split hooks) refusing by name a token count
    ``sp_size`` does not divide: diffusers' Ulysses splits equal chunks (its ``ulysses_anything`` pads uneven ones,
    but gathers their sizes on an accelerator, not on a gloo-only CPU group)."""
    from vidgen.errors import InvalidInputError

    def hook(model, args, kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)
        if x is None:
            return
        if x.dim() == 5:  # (B, C, t, h, w) latents, patchified inside
            patch = model.config.get("patch_size", 1)
            patch = tuple(patch) if isinstance(patch, (tuple, list)) else (model.config.get("patch_size_t", 1) or 1,
                                                                           patch, patch)
            grid = [n // p for n, p in zip(x.shape[2:], patch)]
            tokens = grid[0] * grid[1] * grid[2]
        else:  # (B, N, C) tokens
            tokens, grid = x.shape[1], None
        if tokens % sp_size:
            raise InvalidInputError(f"sp_size={sp_size}: {type(model).__name__} sees {tokens} video tokens"
                                    f"{f' ({grid[0]} x {grid[1]} x {grid[2]})' if grid else ''}, not a multiple of "
                                    f"{sp_size}; diffusers' Ulysses splits equal chunks: choose num_frames / height "
                                    f"/ width whose tokens {sp_size} divides")
    return hook


@contextlib.contextmanager
def context_parallel(pipe, sp_size: int):
    """``pipe``'s transformer(s) split over ``sp_size`` processes of the launch for the block (nothing for 1)."""
    check_context_parallel(pipe, sp_size)
    if sp_size == 1:
        yield
        return
    with launched_default_group():
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError(f"sp_size={sp_size} needs a distributed launch (accelerate launch or torchrun with "
                              f"--nproc_per_node a multiple of {sp_size}); this process runs alone")
        world = dist.get_world_size()
        if world % sp_size:
            raise ConfigError(f"sp_size={sp_size} does not divide the world size {world}: world = data-parallel "
                              f"size x sp_size; launch a multiple of {sp_size} processes or choose a divisor of "
                              f"{world}")
        enabled = []
        try:
            for model in _models(pipe):
                if getattr(model, "_parallel_config", None) is not None:
                    raise UnsupportedError(f"sp_size={sp_size}: {type(model).__name__} is already split "
                                           "(enable_parallelism or from_pretrained(parallel_config=...)); call "
                                           "with sp_size=1")
                config = parallel_config(model, sp_size)
                config.mesh = _mesh(pipe, config, sp_size)
                _enable(model, config)
                enabled.append((model, model.register_forward_pre_hook(_check_tokens(sp_size), with_kwargs=True)))
            yield
        finally:
            for model, check in enabled:
                check.remove()
                _disable(model)
