"""Named sizes of the causal codec, shared by :class:`~vidgen.tokenizers.CausalVAE` and
:class:`~vidgen.tokenizers.CausalVQVAE` (which drops ``latent_channels``: its quantizer sets the width)."""
from __future__ import annotations

# Named size presets (all 4x8x8, 16 latent channels unless overridden).
VAE_PRESETS: dict[str, dict] = {
    "tiny": dict(widths=(8, 16, 16), num_res_blocks=1, decoder_extra_blocks=0, latent_channels=4),
    "small": dict(widths=(32, 64, 128), num_res_blocks=1, decoder_extra_blocks=1),
    "base": dict(widths=(64, 128, 256, 256), num_res_blocks=2, decoder_extra_blocks=1),
}
