"""The autoregressive decode step replayed from a CUDA graph: ``generate_tokens(..., compile="cuda_graph")``.

A one-token decode step of a small model is mostly kernel launches (tens per layer, microseconds of work each), so
on a GPU the CPU that launches them is the bottleneck. :class:`GraphedDecodeStep` records the static-shape step of
:class:`~vidgen.generators.kv_decode.KVDecodeStep` (``static=True``: every call attends all cache positions with the
pattern's mask row, so its shapes and memory addresses never change) once per generation window with
``torch.cuda.CUDAGraph``, and then replays it for every further token after copying the token ids and position
into the graph's input buffers. The first call runs the step eagerly (the warm-up capture needs) and returns its
result; the graph records the same step on the same buffers, so replays compute exactly what the eager static step
computes (tests/unit/test_generators_cuda_graph.py compares the tokens on a GPU).
"""
from __future__ import annotations

import torch


class GraphedDecodeStep:
    """``step(token, pos) -> logits`` as :meth:`KVDecodeStep.step` (``pos`` a Python int), replayed from a CUDA
    graph after the first call. ``decoder`` must be static (``KVDecodeStep(..., static=True)``) and on a CUDA
    device."""

    def __init__(self, decoder):
        if not decoder.static:
            raise ValueError("a CUDA graph replays fixed shapes: build the decoder with static=True")
        self.decoder = decoder
        self.graph = None

    def __call__(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        if self.graph is None:
            return self._capture(token, pos)
        self.token.copy_(token)
        self.pos.fill_(pos)
        self.graph.replay()
        return self.logits.clone()  # the graph's output buffer is overwritten by the next replay

    def _capture(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        self.token = token.clone()
        self.pos = torch.tensor(pos, device=token.device)
        side = torch.cuda.Stream(token.device)
        side.wait_stream(torch.cuda.current_stream(token.device))
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires: the real step
            logits = self.decoder.step(self.token, self.pos)
        torch.cuda.current_stream(token.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # records the same step on the same buffers (runs nothing)
            self.logits = self.decoder.step(self.token, self.pos)
        return logits.clone()
