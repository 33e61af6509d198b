"""The LitData surface under vidgen's shard datasets, pinned: the installed LitData is the one constraints.txt pins and
``vidgen.data.shards.format`` was checked against; its private ``BinaryWriter`` (through ``ShardWriter``) writes
datasets that the public ``complete_dataset`` finishes, ``merge_datasets`` joins in order and ``StreamingDataset``
reads back item for item; ``index.json`` names each shard file with its size (what ``verify`` reads). A LitData
upgrade fails here first, loudly, instead of in an encode."""
from __future__ import annotations

import json
from pathlib import Path

import litdata

from vidgen.data.shards.format import LITDATA_VERSION, ShardWriter, plain

ROOT = Path(__file__).resolve().parents[2]


def pinned(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"constraints.txt does not pin {package}")


def test_litdata_is_the_pinned_version_the_format_was_checked_against():
    assert pinned("litdata") == LITDATA_VERSION, (
        f"constraints.txt pins litdata {pinned('litdata')}, vidgen/data/shards/format.py was checked against "
        f"{LITDATA_VERSION}: check its private BinaryWriter and index.json use with this file's tests on the new "
        f"version, then update LITDATA_VERSION")
    assert litdata.__version__ == LITDATA_VERSION, f"installed litdata {litdata.__version__}: run make install"


def test_writer_index_merge_and_reads_back(tmp_path):
    items = [{"x": bytes([i]) * (3000 + i), "text_key": (1 << 62) + i, "key": f"clip{i}", "caption": f"c{i % 3}"}
             for i in range(40)]
    for part, chunk in (("a", items[:25]), ("b", items[25:])):
        writer = ShardWriter(tmp_path / part, shard_bytes=20_000)  # several shard files each
        for item in chunk:
            writer.add(item)
        writer.close()
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert len(index["chunks"]) > 1
    for chunk in index["chunks"]:  # what verify() checks a dataset by
        assert (tmp_path / "a" / chunk["filename"]).stat().st_size == chunk["chunk_bytes"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        ["index.json", *(c["filename"] for c in index["chunks"])])  # the writer's own per-rank index is merged away
    litdata.merge_datasets([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "ab"))
    for folder, expected in (("a", items[:25]), ("ab", items)):
        ds = litdata.StreamingDataset(str(tmp_path / folder))
        assert [plain(ds[i]) for i in range(len(expected))] == expected
