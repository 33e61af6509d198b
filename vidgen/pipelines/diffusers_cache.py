"""diffusers' cache hooks (``FirstBlockCacheConfig`` and the other configs of ``diffusers.hooks``) on the
transformer(s) of a :class:`~vidgen.pipelines.DiffusersVideoPipeline`."""
from __future__ import annotations

from vidgen.errors import InvalidInputError, UnsupportedError


class DiffusersCacheMixin:
    """``enable_cache`` / ``disable_cache`` on ``transformer`` and ``transformer_2``."""

    def enable_cache(self, config) -> None:
        """diffusers' cache hooks on the transformer(s), e.g. ``pipe.enable_cache(FirstBlockCacheConfig(threshold=
        0.05))``: any of the seven cache configs of ``diffusers.hooks`` (:mod:`.cache_configs`: the timestep
        callback filled in, FasterCache refused by name where the family guides by separate passes). vidgen's
        sampler gives each model call the cache context diffusers' pipelines give it (``cond`` / ``uncond``, the
        step), and clears the hooks' state at the start of each call. :meth:`disable_cache` removes them."""
        models = [m for m in (self.transformer, getattr(self, "transformer_2", None)) if m is not None]
        lacking = [type(m).__name__ for m in models if not hasattr(m, "enable_cache")]
        if lacking:
            raise UnsupportedError(f"enable_cache: {', '.join(lacking)} has no diffusers cache hooks (CacheMixin)")
        from vidgen.pipelines.cache_configs import add_timestep_probe, prepare_cache_config
        config = prepare_cache_config(self, config)  # the timestep callback; FasterCache's refusal (.cache_configs)
        for model in models:
            try:
                model.enable_cache(config)
                add_timestep_probe(self, model)
            except ValueError as err:  # an unknown config type, or hooks already on
                raise InvalidInputError(f"enable_cache: {err} (pass a config of diffusers.hooks, e.g. "
                                        f"FirstBlockCacheConfig(threshold=0.05); disable_cache() first to change "
                                        f"it)") from err

    def disable_cache(self) -> None:
        """Remove the cache hooks :meth:`enable_cache` added."""
        for model in (self.transformer, getattr(self, "transformer_2", None)):
            if model is not None and getattr(model, "is_cache_enabled", False):
                model.disable_cache()
            if model is not None:
                from vidgen.pipelines.cache_configs import remove_timestep_probe
                remove_timestep_probe(model)

    @property
    def current_timestep(self):
        """The timestep the transformer was last called with (what diffusers' pipelines call ``current_timestep``;
        PyramidAttentionBroadcast / FasterCache read it), while a cache is on."""
        from vidgen.pipelines.cache_configs import current_timestep
        return current_timestep(self)
