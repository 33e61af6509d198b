"""experiments/merge_sweeps.py's ``--check`` and the hygiene it enforces (issue #34, "sweep the model you ship"): the
sampling sweep each shipped pipeline cites was repeated, exactly, on the weights in its folder."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from vidgen.demo.run import PIPELINES

ROOT = Path(__file__).resolve().parents[2]
ROW = {"sampling": {"guidance_scale": 2.0}, "seconds_per_video": 1.0, "seen": {"color_motion": 0.9, "shape": 0.4},
       "all": {"color_motion": 0.9, "shape": 0.4}, "silhouette_only": {"seen": 0.9}, "motion_right": {"left": "2/2"}}
SHARED = {"host_cpus": 2, "versions": {"torch": "x"}, "pipeline": "flow", "prompts": 4, "prompt_seed": 1,
          "motions": "all", "tokenizer": "the pipeline's own", "precision": "fp32"}


@pytest.fixture(scope="module")
def merge(load_script):
    return load_script("experiments/merge_sweeps.py")


@pytest.fixture(scope="module")
def results(load_script):
    return load_script("eval/results.py")


def merged():
    other = {**copy.deepcopy(ROW), "sampling": {"guidance_scale": 3.0}}
    return {**SHARED, "rows": [copy.deepcopy(ROW), other], "chosen": {"guidance_scale": 2.0}, "rule": "r"}


def read(**changes):
    row = {**copy.deepcopy(ROW), "seconds_per_video": 1.7, **changes}  # seconds may differ, scores may not
    return {**SHARED, "weights_sha256": "abc", "rows": [row], "command": "c", "date": "d", "threads": 2}


def test_a_read_that_repeats_the_chosen_row_is_recorded_with_its_digest(merge):
    out = merge.attach_check(merged(), read(), Path("check.json"))
    assert out["check"]["weights_sha256"] == "abc" and out["check"]["file"] == "check.json"
    assert out["rows"] == merged()["rows"]


@pytest.mark.parametrize("bad, message", [
    (read(seen={"color_motion": 0.85, "shape": 0.4}), "does not repeat the chosen row"),
    (read(sampling={"guidance_scale": 3.0}), "no row of the chosen setting"),
    ({**read(), "precision": "bf16"}, "differs from the sweep in 'precision'"),
    ({k: v for k, v in read().items() if k != "weights_sha256"}, "no weights_digest"),
])
def test_a_read_that_does_not_repeat_it_is_refused(merge, bad, message):
    with pytest.raises(SystemExit, match=message):
        merge.attach_check(merged(), bad, Path("check.json"))


def test_check_alone_needs_an_existing_merged_file(merge, tmp_path):
    with pytest.raises(SystemExit):
        merge.main(["--check", str(tmp_path / "read.json"), "--out", str(tmp_path / "missing.json")])


def test_weights_digest_follows_bytes_and_names(results, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.safetensors").write_bytes(b"1234")
    first = results.weights_digest(tmp_path)
    (tmp_path / "a" / "w.safetensors").write_bytes(b"1235")
    assert results.weights_digest(tmp_path) != first
    (tmp_path / "a" / "w.safetensors").rename(tmp_path / "a" / "v.safetensors")
    assert results.weights_digest(tmp_path) != first
    with pytest.raises(FileNotFoundError):
        results.weights_digest(tmp_path / "a" / "nothing")


def _distilled(name: str) -> bool:
    """A few-step student's folder: its step count comes from the distillation's tuning read, not a sampler sweep."""
    config = json.loads((ROOT / "pretrained" / PIPELINES[name] / "transformer" / "config.json").read_text())
    return bool(config.get("distillation"))


@pytest.mark.parametrize("name", sorted(n for n in PIPELINES if _distilled(n)))
def test_a_distilled_folder_was_benchmarked_on_its_shipped_weights(results, name):
    """eval/bench_few_step.py read the shipped folder itself, at the step count it samples with."""
    bench = json.loads((ROOT / "docs" / "results" / "bench_few_step.json").read_text())
    folder = ROOT / "pretrained" / PIPELINES[name]
    students = [r for r in bench["rows"] if r["name"] != "teacher"]
    assert students and all(r["weights_sha256"] == results.weights_digest(folder) for r in students), \
        f"{name}: rerun python eval/bench_few_step.py on the shipped folder"
    saved = json.loads((folder / "sampling_config.json").read_text())
    assert bench["shipped_steps"] == saved["num_inference_steps"]


def _read_by_ship_rule(name: str) -> bool:
    """The block-causal folder: its settings come from its recipe's ship read, not a sampler sweep."""
    return json.loads((ROOT / "pretrained" / PIPELINES[name] / "model_index.json").read_text())["_class_name"] == \
        "CausalVideoPipeline"


def test_the_causal_folder_samples_with_its_ship_read_on_its_weights(results):
    """experiments/results/causal_ship_read_192.json read the shipped weights at the folder's settings, and those
    settings had the highest colour+motion of the shipped stage (the faster of a tie)."""
    read = json.loads((ROOT / "experiments" / "results" / "causal_ship_read_192.json").read_text())
    folder = next(ROOT / "pretrained" / f for n, f in PIPELINES.items() if _read_by_ship_rule(n))
    mine = [r for r in read["rows"] if r["weights_sha256"] == results.weights_digest(folder)]
    saved = json.loads((folder / "sampling_config.json").read_text())
    clip = {k: v for k, v in saved.items() if k != "prompt_switch"}  # single clips never switch prompts
    chosen = [r for r in mine if {k: r["settings"][k] for k in clip} == clip]
    assert len(chosen) == 1 and chosen[0]["color_motion"] == max(r["color_motion"] for r in read["rows"][1:])
    best = [r for r in mine if r["color_motion"] == chosen[0]["color_motion"]]
    assert chosen[0]["seconds_per_video"]["batch_1"] == min(r["seconds_per_video"]["batch_1"] for r in best)


def test_the_causal_folder_switches_prompts_as_its_story_reads_chose(results):
    """experiments/configs/sampling/causal_prompt_switch.yaml: the switch under which more of the 40 tuning stories
    keep every segment's colour, read on the folder's weights (a tie keeps "recache")."""
    folder = ROOT / "pretrained" / "shapes-causal"
    passing = {}
    for switch in ("recache", "reset"):
        read = json.loads((ROOT / "experiments" / "results" /
                           f"causal_ship_rule_shapes-causal_{switch}_stories.json").read_text())
        weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
        assert read["weights_sha256"][str(weights.relative_to(ROOT))] == results.sha256_file(weights)
        assert read["settings"]["sampling"]["prompt_switch"] == switch and len(read["stories"]) == 40
        passing[switch] = sum(story["passes"] for story in read["stories"])
    wanted = "reset" if passing["reset"] > passing["recache"] else "recache"
    saved = json.loads((folder / "sampling_config.json").read_text())
    assert saved.get("prompt_switch", "recache") == wanted


@pytest.mark.parametrize("name", sorted(n for n in PIPELINES if not _distilled(n) and not _read_by_ship_rule(n)))
def test_each_shipped_sweep_was_repeated_on_the_shipped_weights(results, name):
    """Shipping new weights without repeating the chosen setting's read on them fails here."""
    sweep = json.loads((ROOT / "docs" / "results" / f"sampling_sweep_{name}.json").read_text())
    folder = ROOT / "pretrained" / PIPELINES[name]
    assert sweep["check"]["weights_sha256"] == results.weights_digest(folder), \
        f"{name}: rerun the chosen setting on pretrained/ and `experiments/merge_sweeps.py --check` (see its docstring)"
    saved = json.loads((folder / "sampling_config.json").read_text())
    assert {k: saved[k] for k in sweep["chosen"]} == sweep["chosen"]  # the folder samples with what was chosen


def test_a_read_names_its_short_digest_apart_from_its_weights_hashes(merge):
    new = {**read(), "weights_digest": "def", "weights_sha256": {"pretrained/x/t.safetensors": "0" * 64}}
    assert merge.attach_check(merged(), new, Path("check.json"))["check"]["weights_sha256"] == "def"
    with pytest.raises(SystemExit, match="names no weights_digest"):
        merge.attach_check(merged(), {**new, "weights_digest": None, "weights_sha256": {}}, Path("check.json"))
