"""vidgen data encode / info: a folder of mixed sizes and lengths (with a corrupt file, an empty file and a too-short
clip) into buckets, equal to encoding each clip alone; a manifest with time ranges and a missing file; CSV, JSONL and
Parquet manifests list the same clips; kill -9 and rerun encodes every clip exactly once; a finished encode leaves no
work units and a rerun returns it; the dataset refuses another tokenizer's fingerprint and a truncated shard."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vidgen.cli import main as cli
from vidgen.data.shards import ShardDataset, dataset_info, verify
from vidgen.errors import ConfigError, ShardError, VideoIOError
from vidgen.io import read_video
from helpers.shards import save_tiny_tokenizers, write_captioned_clips
from vidgen.tokenizers import video_to_tokens
from vidgen.training import encode_dataset

BUCKETS = "9x32x32,9x32x48"
SOURCES = {"a.mp4": (12, 32, 32, "a red circle"), "b.mp4": (10, 40, 60, "a blue square"),
           "c.mp4": (9, 48, 32, "a red circle"), "d.mp4": (16, 64, 64, "a green star"),
           "short.mp4": (4, 32, 32, "too short")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    src = write_captioned_clips(root / "src", SOURCES)
    (src / "corrupt.mp4").write_bytes(b"this is not a video" * 20)
    (src / "empty.mp4").write_bytes(b"")
    with (src / "metadata.jsonl").open("a") as f:
        f.write(json.dumps({"file_name": "corrupt.mp4", "text": "x"}) + "\n")
        f.write(json.dumps({"file_name": "empty.mp4", "text": "y"}) + "\n")
    save_tiny_tokenizers(root)
    info = encode_dataset(src, root / "vae", root / "out", buckets=BUCKETS, max_text_tokens=8, num_workers=1,
                          chunk_size=3, dtype="float32", show_progress=False)
    return root, info


def test_mixed_folder_goes_to_buckets_and_every_skip_is_recorded(setup):
    root, info = setup
    assert {n: b["clips"] for n, b in info["buckets"].items()} == {"9x32x32": 3, "9x32x48": 1}
    reasons = {s["key"]: s["reason"] for s in info["skipped"]}
    assert set(reasons) == {"short.mp4", "corrupt.mp4", "empty.mp4"}
    assert reasons["short.mp4"].startswith("too short: 4 frames") and reasons["empty.mp4"] == "empty file"
    assert reasons["corrupt.mp4"].startswith("unreadable:")
    assert info["clips"] + len(info["skipped"]) == len(SOURCES) + 2  # nothing lost without a record
    # c.mp4 is 48x32 (portrait): the nearest aspect is the square bucket, resized to cover and center-cropped
    ds = ShardDataset(root / "out")
    keys = [k for i in range(3) for k in ds.clips("9x32x32", [i])[2]]
    assert sorted(keys) == ["a.mp4", "c.mp4", "d.mp4"]


def test_shards_equal_encoding_each_clip_alone(setup):
    """The streamed, batched encode against the plain path: read the clip at its bucket, encode it alone."""
    root, _ = setup
    from vidgen.tokenizers import load_tokenizer
    from vidgen.text import encode_prompts, load_text_encoder
    tok, text = load_tokenizer(root / "vae"), load_text_encoder()
    ds = ShardDataset(root / "out")
    for bucket, shape in (("9x32x32", (32, 32)), ("9x32x48", (32, 48))):
        for i in range(ds.counts[bucket]):
            x, text_keys, keys = ds.clips(bucket, [i])
            video, _ = read_video(root / "src" / keys[0], num_frames=9, size=shape)
            torch.testing.assert_close(x, video_to_tokens(tok, video[None]), rtol=1e-5, atol=1e-5)
            hidden, mask, pooled = ds.text(text_keys)
            emb = encode_prompts(*text, [SOURCES[keys[0]][3]], 8)
            torch.testing.assert_close(hidden, emb.hidden)
            torch.testing.assert_close(pooled, emb.pooled)
            assert torch.equal(mask, emb.mask)
    assert dataset_info(root / "out")["captions"] == 3  # once per distinct caption (a and c share one)


def test_cli_info_prints_the_summary(setup):
    root, _ = setup
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["data", "info", str(root / "out")]) == 0
    printed = json.loads(out.getvalue())
    assert printed["clips"] == 4 and printed["buckets"] == {"9x32x32": 3, "9x32x48": 1}
    assert len(printed["tokenizer_fingerprint"]) == 16 and printed["text_encoder"].endswith("all-MiniLM-L6-v2")
    assert {s["key"] for s in printed["skipped"]} == {"short.mp4", "corrupt.mp4", "empty.mp4"}


def test_another_tokenizer_and_a_truncated_shard_are_refused(setup, tmp_path):
    root, info = setup
    with pytest.raises(ShardError, match=r"encoded with another tokenizer \(fingerprint [0-9a-f]{16}"):
        ShardDataset(root / "out", fingerprint="0123456789abcdef")
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(root / "out", copy, ignore=shutil.ignore_patterns("parts"))
    shard = next((copy / "9x32x32").glob("*.bin"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ShardError, match=r"9x32x32/.*\.bin: shard truncated or damaged"):
        verify(copy)
    with pytest.raises(ShardError, match="no info.json"):
        ShardDataset(tmp_path)


def test_rerun_with_other_settings_is_refused(setup):
    root, _ = setup
    with pytest.raises(ConfigError, match=r"holds an encode with other settings \(buckets:"):
        encode_dataset(root / "src", root / "vae", root / "out", buckets="9x32x32", max_text_tokens=8,
                       num_workers=0, chunk_size=3, dtype="float32", show_progress=False)


def test_manifest_with_time_ranges_and_a_missing_file_into_ids(setup, tmp_path):
    root, _ = setup
    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,caption,start,end\n"
                        f"{root / 'src' / 'd.mp4'},first half,0,1.0\n"
                        f"{root / 'src' / 'd.mp4'},second half,1.0,\n"
                        "nowhere.mp4,gone,,\n")
    info = encode_dataset(manifest, root / "fsq", tmp_path / "out", buckets="9x32x32,5x32x32", text_encoder="none",
                          num_workers=0, show_progress=False)
    assert info["buckets"]["9x32x32"]["clips"] == 0 and info["buckets"]["5x32x32"]["clips"] == 2  # 8 frames each
    assert info["skipped"] == [{"key": "nowhere.mp4", "path": str(tmp_path / "nowhere.mp4"),
                                "reason": "missing: no such file or folder"}]
    assert info["tokenizer"]["kind"] == "ids" and info["tokenizer"]["dtype"] == "int16"
    ds = ShardDataset(tmp_path / "out")
    x, _, keys = ds.clips("5x32x32", [0, 1])
    assert x.dtype == torch.int16 and sorted(keys) == [f"{root / 'src' / 'd.mp4'}@0-1", f"{root / 'src' / 'd.mp4'}@1-"]


def test_kill9_then_rerun_encodes_every_clip_exactly_once(setup, tmp_path):
    root, _ = setup
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vidgen", "data", "encode", str(root / "src"), "--tokenizer", str(root / "vae"),
           "--out", str(out), "--buckets", BUCKETS, "--text-encoder", "none", "--chunk-size", "1", "--workers", "0",
           "--threads", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300  # a loaded machine can take minutes to start the process; a quiet one, seconds
    while not (out / "parts" / "c000001").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert (out / "parts").is_dir(), "the encode wrote no work unit within 300 s"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "info.json").exists()  # killed before the encode finished (it may have written every part)
    finished = sorted(p.name for p in (out / "parts").iterdir() if not p.name.startswith("."))
    assert len(finished) >= 2
    info = encode_dataset(root / "src", root / "vae", out, buckets=BUCKETS, text_encoder="none", chunk_size=1,
                          num_workers=0, show_progress=False)
    ds = ShardDataset(out)
    keys = [k for b in ds.names for i in range(ds.counts[b]) for k in ds.clips(b, [i])[2]]
    assert sorted(keys) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]  # each exactly once
    assert len(info["skipped"]) == 3 and info["clips"] == 4


def test_a_finished_encode_keeps_no_work_units_and_a_rerun_returns_it(setup):
    root, info = setup
    assert not (root / "out" / "parts").exists()
    assert encode_dataset(root / "src", root / "vae", root / "out", buckets=BUCKETS, max_text_tokens=8, num_workers=0,
                          chunk_size=3, dtype="float32", show_progress=False) == info


def test_a_merge_stopped_part_way_is_finished_by_a_rerun(setup, tmp_path, monkeypatch):
    """9x32x32 is joined from two units (litdata.merge_datasets), 9x32x48 is one unit's dataset moved into place;
    the merge stops after the first, the rerun finishes the second and the dataset is the uninterrupted one's."""
    from vidgen.data.shards import merge as merging
    root, _ = setup
    merge_bucket = merging._merge_bucket

    def stop_at_the_second(out, name, units):
        if name != "9x32x32":
            raise KeyboardInterrupt
        merge_bucket(out, name, units)

    kw = dict(buckets=BUCKETS, text_encoder="none", num_workers=0, chunk_size=3, dtype="float32", show_progress=False)
    monkeypatch.setattr(merging, "_merge_bucket", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(root / "src", root / "vae", tmp_path / "out", **kw)
    assert (tmp_path / "out" / "9x32x32").is_dir() and not (tmp_path / "out" / "info.json").exists()
    monkeypatch.undo()
    encode_dataset(root / "src", root / "vae", tmp_path / "out", **kw)
    got, want = ShardDataset(tmp_path / "out"), ShardDataset(root / "out")
    assert got.counts == want.counts and not (tmp_path / "out" / "parts").exists()
    for name in want.names:
        a, b = got.clips(name, range(got.counts[name])), want.clips(name, range(want.counts[name]))
        assert a[2] == b[2] and torch.equal(a[0], b[0])


def test_a_diffusers_vae_folder_encodes_too(setup, tmp_path):
    from diffusers import AutoencoderKLWan
    root, _ = setup
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                         temperal_downsample=[False, True, True]).save_pretrained(tmp_path / "wan")
    info = encode_dataset(root / "src", tmp_path / "wan", tmp_path / "out", buckets="9x32x32", text_encoder="none",
                          num_workers=0, show_progress=False)
    assert info["tokenizer"]["class"] == "DiffusersVideoVAE" and info["tokenizer"]["kind"] == "latents"
    assert info["buckets"]["9x32x32"] == {"clips": 4, "shape": [16, 3, 4, 4]}  # b.mp4 (40x60) cropped to the one bucket


def test_manifests_in_every_format_list_the_same_clips(tmp_path):
    from vidgen.data.shards import SourceClip, list_source
    rows = [{"path": "clips/a.mp4", "caption": "one", "start": 0.5, "end": 2}, {"file_name": "b.mp4", "text": "two"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.csv").write_text("path,caption,start,end\nclips/a.mp4,one,0.5,2\nb.mp4,two,,\n")
    expected = [SourceClip("clips/a.mp4@0.5-2", str(tmp_path / "clips/a.mp4"), "one", 0.5, 2.0),
                SourceClip("b.mp4", str(tmp_path / "b.mp4"), "two")]
    assert list_source(tmp_path / "m.jsonl") == list_source(tmp_path / "m.csv") == expected
    import pyarrow  # a dependency: Parquet manifests work on a fresh install
    import pyarrow.parquet as pq
    pq.write_table(pyarrow.Table.from_pylist([  # a column the manifest does not use is left unread
        {"path": "clips/a.mp4", "caption": "one", "start": 0.5, "end": 2.0, "score": [0.1, 0.2]},
        {"path": "b.mp4", "caption": "two", "start": None, "end": None, "score": []}]), tmp_path / "m.parquet")
    assert list_source(tmp_path / "m.parquet") == expected
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(VideoIOError, match=r"bad.parquet: not a readable Parquet file"):
        list_source(tmp_path / "bad.parquet")
