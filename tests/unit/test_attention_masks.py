"""The 3D attention pattern: dense mask vs a brute-force reading of the spec, flex mask_mod, validation."""
import itertools

import pytest
import torch

from vidgen.attention import (attention_mask3d, causal_pattern, flex_mask_mod3d, full_pattern, make_pattern,
                              spatial_pattern, temporal_pattern, window_pattern)
from vidgen.attention.masks import pattern_mask
from vidgen.errors import InvalidInputError


def brute_force_mask(grid, window, causal, prefix):
    """The issue's wording, one (query, key) pair at a time. causal: False, True / "frame", "token"."""
    t_size, h_size, w_size = grid
    coords = [None] * prefix + list(itertools.product(range(t_size), range(h_size), range(w_size)))
    n = len(coords)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i, j in itertools.product(range(n), range(n)):
        qc, kc = coords[i], coords[j]
        if kc is None:
            ok = True  # every query attends the prefix
        elif qc is None:
            ok = not causal  # prefix queries attend everything; with causal (either mode) they are the past
        else:
            ok = all(win is None or abs(a - b) <= win // 2 for a, b, win in zip(qc, kc, window or (None,) * 3))
            ok = ok and (not causal or kc[0] <= qc[0])
            # token: the key's raster index (t, h, w) is not after the query's (tuples compare lexicographically)
            ok = ok and (causal != "token" or kc <= qc)
        mask[i, j] = ok
    return mask


CASES = [
    ((3, 4, 5), (3, 3, 3), False, 0),
    ((3, 4, 5), (3, 3, 3), True, 2),
    ((2, 3, 3), (1, None, None), False, 1),
    ((4, 2, 3), (None, 1, 1), True, 0),
    ((3, 3, 2), None, True, 3),
    ((2, 5, 3), (2, 4, 9), False, 2),  # even sizes (radius w//2) and a window larger than the grid
    ((1, 1, 1), (1, 1, 1), True, 2),
    ((3, 4, 5), (3, 3, 3), "token", 2),
    ((3, 3, 2), None, "token", 0),
    ((2, 5, 3), (2, 4, 9), "token", 1),  # even sizes, window larger than the grid
    ((4, 2, 3), (None, 1, 1), "token", 0),
    ((2, 3, 3), (1, None, None), "frame", 1),
    ((1, 1, 1), None, "token", 0),  # one token: full
]


@pytest.mark.parametrize("grid,window,causal,prefix", CASES)
def test_dense_mask_matches_spec(grid, window, causal, prefix):
    mask = attention_mask3d(grid, window, causal, prefix)
    assert torch.equal(mask, brute_force_mask(grid, window, causal, prefix))


@pytest.mark.parametrize("grid,window,causal,prefix", CASES)
def test_flex_mask_mod_matches_dense_mask(grid, window, causal, prefix):
    mask = attention_mask3d(grid, window, causal, prefix)
    idx = torch.arange(mask.shape[0])
    mod = flex_mask_mod3d(grid, window, causal, prefix)
    assert torch.equal(mod(0, 0, idx[:, None], idx[None, :]), mask)


@pytest.mark.parametrize("grid,window,causal,prefix", CASES)
def test_density_is_allowed_fraction(grid, window, causal, prefix):
    pattern = make_pattern(grid, window, causal, prefix)
    assert pattern.density() == pytest.approx(pattern_mask(pattern).float().mean().item())


def test_causal_modes():
    grid = (2, 3, 4)
    token = make_pattern(grid, None, "token", 2)
    assert make_pattern(grid, None, True, 2) == make_pattern(grid, None, "frame", 2) == causal_pattern(grid, 2)
    assert token == causal_pattern(grid, 2, causal="token") and token != causal_pattern(grid, 2)
    assert token.causal and token.token_causal and token.causal_mode == "token"
    assert causal_pattern(grid).causal_mode == "frame" and full_pattern(grid).causal_mode is False
    assert len({token, causal_pattern(grid, 2), full_pattern(grid, 2)}) == 3  # hashable, distinct
    assert make_pattern(**token.as_kwargs()) == token and token.as_kwargs()["causal"] == "token"
    n = 24
    assert torch.equal(pattern_mask(make_pattern(grid, None, "token")), torch.ones(n, n, dtype=torch.bool).tril())
    assert not token.is_full and make_pattern((1, 1, 1), None, "token").is_full
    with pytest.raises(InvalidInputError, match="causal"):
        causal_pattern(grid, causal=False)


def test_named_factories():
    grid = (3, 4, 4)
    frame = torch.arange(3).repeat_interleave(16)
    assert torch.equal(pattern_mask(spatial_pattern(grid)), frame[:, None] == frame[None, :])
    assert torch.equal(pattern_mask(causal_pattern(grid)), frame[None, :] <= frame[:, None])
    pos = torch.arange(16).repeat(3)
    assert torch.equal(pattern_mask(temporal_pattern(grid)), pos[:, None] == pos[None, :])
    assert pattern_mask(full_pattern(grid, num_prefix_tokens=2)).all()
    assert full_pattern(grid).is_full and not causal_pattern(grid).is_full
    assert window_pattern(grid, (3, 9, 9)).radii == (1, None, None)  # 9 covers a 4-wide axis: unlimited
    # as_kwargs round-trips through make_pattern.
    pattern = window_pattern(grid, (3, 3, None), causal=True, num_prefix_tokens=1)
    assert make_pattern(**pattern.as_kwargs()) == pattern


@pytest.mark.parametrize("kwargs,match", [
    (dict(grid=(2, 3)), "grid"),
    (dict(grid=(2, 0, 3)), "grid"),
    (dict(grid=(2, 3.0, 3)), "grid"),
    (dict(grid=(2, 3, 3), window=(3, 3)), "window"),
    (dict(grid=(2, 3, 3), window=(3, 0, 3)), r"window\[1\]"),
    (dict(grid=(2, 3, 3), window=(3, -1, 3)), r"window\[1\]"),
    (dict(grid=(2, 3, 3), window=(3, 2.5, 3)), r"window\[1\]"),
    (dict(grid=(2, 3, 3), window=(True, 3, 3)), r"window\[0\]"),
    (dict(grid=(2, 3, 3), num_prefix_tokens=-1), "num_prefix_tokens"),
    (dict(grid=(2, 3, 3), causal=1), "causal"),
    (dict(grid=(2, 3, 3), causal="tokens"), "causal"),
    (dict(grid=(2, 3, 3), causal="none"), "causal"),
    (dict(grid=(2, 3, 3), causal=None), "causal"),
])
def test_bad_pattern_arguments(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        make_pattern(**kwargs)
