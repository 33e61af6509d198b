"""Video tokenizers: the causal 3D VAE (and, built on the same codec, discrete tokenizers); diffusers' video VAEs
through an adapter (:class:`DiffusersVideoVAE`)."""
from vidgen.tokenizers.causal_codec import CausalDecoder, CausalEncoder, CodecConfig, StreamDecoder
from vidgen.tokenizers.diffusers_vae import DIFFUSERS_VIDEO_VAES, DiffusersVideoVAE, is_diffusers_video_vae
from vidgen.tokenizers.layers import CausalCache
from vidgen.tokenizers.loading import is_discrete, load_tokenizer
from vidgen.tokenizers.outputs import BottleneckOutput, ReconstructionOutput
from vidgen.tokenizers.presets import VAE_PRESETS
from vidgen.tokenizers.vae import CausalVAE, DiagonalGaussian, KLBottleneck
from vidgen.tokenizers.tokens import tokens_to_video, video_to_tokens
from vidgen.tokenizers.quantizers import QUANTIZERS, CodebookUsage, QuantizerBottleneck, QuantizerConfig
from vidgen.tokenizers.vqvae import CausalVQVAE, TokenizerEncoding

__all__ = [
    "DIFFUSERS_VIDEO_VAES",
    "QUANTIZERS",
    "VAE_PRESETS",
    "BottleneckOutput",
    "CausalCache",
    "CausalDecoder",
    "CausalEncoder",
    "CausalVAE",
    "CausalVQVAE",
    "CodebookUsage",
    "CodecConfig",
    "DiagonalGaussian",
    "DiffusersVideoVAE",
    "KLBottleneck",
    "QuantizerBottleneck",
    "QuantizerConfig",
    "ReconstructionOutput",
    "StreamDecoder",
    "TokenizerEncoding",
    "is_diffusers_video_vae",
    "is_discrete",
    "load_tokenizer",
    "tokens_to_video",
    "video_to_tokens",
]
