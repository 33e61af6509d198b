"""Built-in offline datasets (deterministic by seed) and a dataset over users' own video folders.

All are torch ``Dataset`` s whose items are dicts with a ``video`` of shape ``(3, T, H, W)`` in ``[-1, 1]``
plus metadata; they work with ``DataLoader`` (any ``num_workers``).
"""
from vidgen.data.folder import VideoFolder, find_videos
from vidgen.data.natural import TEST_SOURCES, TRAIN_SOURCES, NaturalClips
from vidgen.data.scenes import SceneClips
from vidgen.data.shapes import HELD_OUT_PAIRS, ShapeAttributes, ShapesDataset, all_combinations
from vidgen.data.shards import (DEFAULT_BUCKETS, Bucket, BucketBatchSampler, ShardDataset, SourceClip, assign_bucket,
                                dataset_info, list_source, parse_buckets)

__all__ = [
    "Bucket",
    "BucketBatchSampler",
    "DEFAULT_BUCKETS",
    "HELD_OUT_PAIRS",
    "NaturalClips",
    "SceneClips",
    "ShardDataset",
    "ShapeAttributes",
    "ShapesDataset",
    "SourceClip",
    "TEST_SOURCES",
    "TRAIN_SOURCES",
    "VideoFolder",
    "all_combinations",
    "assign_bucket",
    "dataset_info",
    "find_videos",
    "list_source",
    "parse_buckets",
]
