"""Bucketed shard datasets of encoded clips, on LitData: encode once, train as it reads.

    sources      the clips of a video folder or a CSV / JSONL / Parquet manifest
    buckets      which (frames, height, width) shape a clip is encoded at
    encode       source -> work units of tokens (the caller's ``to_tokens``), resumable after a kill
    merge        work units -> one LitData dataset per bucket, a caption table, info.json
    format       the folder layout, the stored dtypes, the LitData writer, info.json and the shard check
    dataset      ShardDataset: clips and caption embeddings by index; ``vidgen data info``
    sampler      BucketBatchSampler and ShardBatches: one bucket a step on every process, read ahead, resumable
    fingerprint  which tokenizer made a dataset's tokens

The package imports nothing of vidgen's tokenizers, generators or training: the tokenizer comes in as a function
(``vidgen.training.encode_dataset`` passes ``functools.partial(vidgen.tokenizers.video_to_tokens, tokenizer)``).
"""
from vidgen.data.shards.buckets import (DEFAULT_BUCKETS, Bucket, assign_bucket, crop_fraction, parse_bucket,
                                        parse_buckets)
from vidgen.data.shards.dataset import ShardDataset, dataset_info, dataset_summary
from vidgen.data.shards.encode import encode_shards
from vidgen.data.shards.fingerprint import tokenizer_fingerprint
from vidgen.data.shards.format import verify
from vidgen.data.shards.sampler import BucketBatchSampler, ShardBatches, equal_token_batches
from vidgen.data.shards.sources import SourceClip, list_source, read_manifest

__all__ = [
    "Bucket",
    "BucketBatchSampler",
    "DEFAULT_BUCKETS",
    "ShardBatches",
    "ShardDataset",
    "SourceClip",
    "assign_bucket",
    "crop_fraction",
    "dataset_info",
    "dataset_summary",
    "encode_shards",
    "equal_token_batches",
    "list_source",
    "parse_bucket",
    "parse_buckets",
    "read_manifest",
    "tokenizer_fingerprint",
    "verify",
]
