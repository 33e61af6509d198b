"""``sp_size`` on a diffusers-backed pipeline: diffusers' context parallelism (Ulysses) over 2 gloo processes on
CPU samples the single-process frames on every rank, each rank's blocks seeing half the tokens, and the transformer
is whole again after the call; the splits diffusers cannot make here are refused by name before any process group."""
from __future__ import annotations

import pytest

from helpers.context_parallel import pipeline_case, uneven_case
from helpers.sequence_parallel import run_group
from vidgen.errors import ConfigError, UnsupportedError
from vidgen.pipelines import load_pipeline
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan") / "wan"
    tiny_native_pipeline("wan").save_pretrained(folder)
    return folder


def test_wan_sp2_ulysses_samples_the_one_process_frames(wan_folder):
    report = run_group(pipeline_case, str(wan_folder))
    whole, split, after = report["tokens"]
    assert whole == [12] and split == [6] and after == [12], report  # 3 x 2 x 2 tokens, half on each rank
    assert report["between_ranks"] == 0.0, report
    assert report["vs_one_process"] <= 1e-5 * max(1.0, report["scale"]), report
    assert report["after"] == 0.0, report


@pytest.mark.slow  # two more process pairs (about 25 s each here): make test-slow, whose summary records them
def test_wan_image_to_video_sp2_samples_the_one_process_frames(tmp_path):
    folder = tmp_path / "wan-i2v"
    tiny_native_pipeline("wan", pipeline_class="WanImageToVideoPipeline").save_pretrained(folder)
    report = run_group(pipeline_case, str(folder), 2, dict(num_inference_steps=2), True)
    assert report["tokens"][1] == [6] and report["between_ranks"] == 0.0, report
    assert report["vs_one_process"] <= 1e-5 * max(1.0, report["scale"]), report


@pytest.mark.slow
def test_uneven_tokens_are_refused_by_name(wan_folder):
    message = run_group(uneven_case, str(wan_folder))
    assert message.startswith("InvalidInputError: sp_size=2: WanTransformer3DModel sees 9 video tokens (1 x 3 x 3), "
                              "not a multiple of 2"), message


def test_context_parallel_refusals_name_the_reason(wan_folder):
    pipe = load_pipeline(wan_folder, dtype="fp32")
    # 2 heads, sp_size 3: ring attention, which diffusers' native attention (CPU) cannot serve
    with pytest.raises(UnsupportedError, match=r"sp_size=3: WanTransformer3DModel has 2 attention heads, not a "
                                               r"multiple of 3, .*ring attention.*'native' attention .*no return_lse"):
        pipe("a fox", num_inference_steps=1, sp_size=3)
    with pytest.raises(ConfigError, match="sp_size=2 needs a distributed launch"):
        pipe("a fox", num_inference_steps=1, sp_size=2)
    with pytest.raises(ConfigError, match="sp_size must be an int >= 1"):
        pipe("a fox", num_inference_steps=1, sp_size=0)
