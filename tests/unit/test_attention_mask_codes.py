"""Packed slot codes (vidgen.attention.mask_codes): the kernel's five-operation mask test says, on every pair of slots
of a layout (prefix, padding and video), exactly what its coordinate test says."""
import dataclasses

import pytest
import torch

from vidgen.attention import mask_codes, tiles
from vidgen.attention.masks import make_pattern, pattern_mask
from vidgen.attention.testing import random_patterns

PATTERNS = random_patterns(24, seed=5, max_video_tokens=200) + [
    make_pattern((4, 6, 5), (3, 5, 3), causal=True, num_prefix_tokens=3),
    make_pattern((3, 4, 4), (7, 9, 9), num_prefix_tokens=2),  # window larger than the grid
    make_pattern((5, 3, 7), (None, 1, None), causal=True),  # unlimited axes, causal
    make_pattern((2, 6, 8), (1, None, None), num_prefix_tokens=5),
]


def _layouts(pattern, align=16):
    yield None
    yield from tiles.candidate_boxes(pattern.grid, align)


@pytest.mark.parametrize("pattern", PATTERNS, ids=[f"{p.grid}-r{p.radii}-c{int(p.causal)}-p{p.num_prefix_tokens}"
                                                   for p in PATTERNS])
def test_packed_test_equals_coordinate_test_on_every_slot_pair(pattern):
    for box in _layouts(pattern):
        layout = tiles.make_layout(pattern, box, 16)
        codes = mask_codes.pack(pattern, layout)
        assert codes is not None
        packed = mask_codes.allowed_from_codes(codes, pattern)
        assert torch.equal(packed, mask_codes.allowed_from_coords(pattern, layout)), box
        real = layout.dst  # and on the real tokens both are the pattern's own mask
        assert torch.equal(packed[real[:, None], real[None, :]], pattern_mask(pattern))


def test_a_wrong_sentinel_is_caught():
    """The comparison can fail: padding slots coded like prefix slots let prefix queries attend padding keys."""
    pattern = make_pattern((3, 5, 7), (3, 3, 3), num_prefix_tokens=3)
    layout = tiles.make_layout(pattern, (1, 4, 4), 16)
    codes = mask_codes.pack(pattern, layout)
    pad = layout.coords[0] == tiles.PAD_T
    wrong = dataclasses.replace(codes, codes=torch.where(pad, codes.prefix_code, codes.codes))
    assert not torch.equal(mask_codes.allowed_from_codes(wrong, pattern),
                           mask_codes.allowed_from_coords(pattern, layout))


@pytest.mark.parametrize("grid,window,fits", [
    ((30, 48, 80), (18, 24, 24), True),  # the GPU benchmark's shapes
    ((21, 30, 52), (9, 17, 33), True),
    ((16, 256, 256), (3, 7, 7), True),
    ((16, 600, 64), (3, 7, 7), False),  # h beyond its 10-bit field
    ((400, 32, 32), (None, 3, 3), False),  # t unlimited over 400 frames: the sentinels leave the field
    ((400, 32, 32), (9, 3, 3), True),
])
def test_pack_refuses_grids_its_fields_cannot_hold(grid, window, fits):
    pattern = make_pattern(grid, window)
    layout = tiles.make_layout(pattern, None, 128)
    assert (mask_codes.pack(pattern, layout) is not None) == fits


@pytest.mark.parametrize("grid,window,causal,prefix,box", [
    ((16, 250, 250), (3, 7, 7), False, 7, (2, 8, 8)),  # h and w fields nearly full
    ((200, 40, 40), (None, 5, 5), True, 3, (8, 4, 4)),  # t unlimited and causal: the sentinels near the field's top
    ((30, 48, 80), (18, 24, 24), False, 0, (8, 4, 4)),
])
def test_packed_test_near_the_fields_capacity(grid, window, causal, prefix, box):
    """Sampled slot pairs of large grids (all prefix and padding slots among the rows and columns)."""
    pattern = make_pattern(grid, window, causal, prefix)
    layout = tiles.make_layout(pattern, box, 128)
    codes = mask_codes.pack(pattern, layout)
    assert codes is not None
    gen = torch.Generator().manual_seed(0)
    special = torch.nonzero((layout.coords[0] < 0) | (layout.coords[0] == tiles.PAD_T)).flatten()[:600]
    rows = torch.cat([special, torch.randint(layout.length, (1500,), generator=gen)])
    cols = torch.cat([special, torch.randint(layout.length, (1500,), generator=gen)])
    near = layout.dst[torch.randint(pattern.num_tokens, (1,), generator=gen)]  # plus one query's whole neighbourhood
    cols = torch.cat([cols, torch.nonzero(mask_codes.allowed_from_coords(pattern, layout, near)[0]).flatten()])
    rows = torch.cat([rows, near])
    packed = mask_codes.allowed_from_codes(codes, pattern, rows, cols)
    assert packed.any() and not packed.all()
    assert torch.equal(packed, mask_codes.allowed_from_coords(pattern, layout, rows, cols))
