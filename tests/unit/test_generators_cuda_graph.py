"""The autoregressive decode step replayed from a CUDA graph (``compile="cuda_graph"``) gives eager's tokens.

Needs a CUDA GPU (the GPU machine runs it with the other CUDA tests, experiments/device/setup.sh); on a CPU the mode is
refused by name (tests/unit/test_bad_inputs.py)."""
import pytest
import torch

from vidgen.generators import AutoregressiveVideoTransformer, Conditioning, generate_tokens
from vidgen.generators.cuda_graph import GraphedDecodeStep
from vidgen.testing import perturb_weights

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
GRID, VOCAB, TEXT_DIM = (3, 4, 4), 64, 32


def build(**kw):
    torch.manual_seed(0)
    model = AutoregressiveVideoTransformer.from_preset("tiny", vocab_size=VOCAB, text_dim=TEXT_DIM, max_text_tokens=4,
                                                       max_grid=(2, 4, 4), **kw)
    return perturb_weights(model, seed=100, scale=0.1).eval().cuda()


def cond(batch=2):
    g = torch.Generator().manual_seed(1)
    return Conditioning(text=torch.randn(batch, 3, TEXT_DIM, generator=g).cuda(),
                        pooled=torch.randn(batch, TEXT_DIM, generator=g).cuda())


@pytest.mark.parametrize("layout", ["full", "spatiotemporal"])  # spatiotemporal: windowed blocks (mask rows)
def test_cuda_graph_tokens_equal_eager(layout):
    """3 latent frames with a 2-frame context: two windows, so two graphs are recorded and replayed."""
    model = build(layout=layout)
    kw = dict(grid=GRID, batch=2, guidance_scale=3.0, temperature=1.0)
    eager = generate_tokens(model, cond(), generator=torch.Generator().manual_seed(0), **kw)
    graphed = generate_tokens(model, cond(), generator=torch.Generator().manual_seed(0), compile="cuda_graph",
                              **kw)
    assert torch.equal(graphed, eager)


def test_graphed_step_needs_a_static_decoder():
    class Dynamic:
        static = False
    with pytest.raises(ValueError, match="static=True"):
        GraphedDecodeStep(Dynamic())
