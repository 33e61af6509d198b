"""Video tokenizers: the causal 3D VAE (and, built on the same codec, discrete tokenizers)."""
from vidgen.tokenizers.causal_codec import CausalDecoder, CausalEncoder, CodecConfig, StreamDecoder
from vidgen.tokenizers.layers import CausalCache
from vidgen.tokenizers.loading import is_discrete, load_tokenizer
from vidgen.tokenizers.outputs import BottleneckOutput, ReconstructionOutput
from vidgen.tokenizers.presets import VAE_PRESETS
from vidgen.tokenizers.vae import CausalVAE, DiagonalGaussian, KLBottleneck
from vidgen.tokenizers.quantizers import QUANTIZERS, CodebookUsage, QuantizerBottleneck, QuantizerConfig
from vidgen.tokenizers.vqvae import CausalVQVAE, TokenizerEncoding

__all__ = [
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
    "KLBottleneck",
    "QuantizerBottleneck",
    "QuantizerConfig",
    "ReconstructionOutput",
    "StreamDecoder",
    "TokenizerEncoding",
    "is_discrete",
    "load_tokenizer",
]
