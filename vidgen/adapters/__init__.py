"""diffusers' video transformers as vidgen generators: the adapter (:class:`DiffusersVideoTransformer`: vidgen's
token interface, training loss and sampler over any family's transformer), 3D window attention swapped into their
blocks, and a Wan transformer made block-causal. What differs between families is in their family files
(:mod:`vidgen.families`); nothing here names a family."""
from vidgen.adapters.causal import BlockCausal, block_causal
from vidgen.adapters.transformer import DiffusersVideoTransformer

__all__ = ["BlockCausal", "DiffusersVideoTransformer", "block_causal"]
