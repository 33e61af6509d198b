"""Built-in offline datasets (deterministic by seed) and a dataset over users' own video folders.

All are torch ``Dataset`` s whose items are dicts with a ``video`` of shape ``(3, T, H, W)`` in ``[-1, 1]``
plus metadata; they work with ``DataLoader`` (any ``num_workers``).
"""
from vidgen.data.folder import VideoFolder, find_videos
from vidgen.data.natural import TEST_SOURCES, TRAIN_SOURCES, NaturalClips
from vidgen.data.scenes import SceneClips
from vidgen.data.shapes import HELD_OUT_PAIRS, ShapeAttributes, ShapesDataset, all_combinations

__all__ = [
    "HELD_OUT_PAIRS",
    "NaturalClips",
    "SceneClips",
    "ShapeAttributes",
    "ShapesDataset",
    "TEST_SOURCES",
    "TRAIN_SOURCES",
    "VideoFolder",
    "all_combinations",
    "find_videos",
]
