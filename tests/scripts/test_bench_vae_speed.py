"""eval/bench_vae_speed.py on tiny shapes: the FLOP counting is right, bf16 cases run in bf16, and the README table
has the promised shape (fp32 / bf16 / bf16 + compile columns)."""
from __future__ import annotations

import pytest
import torch

TINY = (8, 16, 16, 16)  # 8x spatial compression like the benchmark, tiny widths


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("eval/bench_vae_speed.py")


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_flops_of_one_conv_equal_a_hand_count(bench):
    conv = torch.nn.Conv3d(3, 8, kernel_size=3, padding=1)
    flops, out = bench.count_flops(conv, torch.randn(1, 3, 4, 8, 8))
    assert out.shape == (1, 8, 4, 8, 8)
    assert flops == 2 * (8 * 4 * 8 * 8) * (3 * 27)  # 2 FLOPs per multiply-add, per output element


def test_vidgen_flops_equal_the_sum_over_its_layers(bench):
    """Everything that costs FLOPs in CausalVAE is a conv or linear layer: a hook-based hand count must agree."""
    model = bench.build("vidgen", TINY)
    hand = [0]

    def hook(module, inputs, out):
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            hand[0] += 2 * out.numel() * module.weight[0].numel()  # (in / groups) * kernel per output element
        elif isinstance(module, torch.nn.Linear):
            hand[0] += 2 * out.numel() * module.in_features

    for module in model.modules():
        module.register_forward_hook(hook)
    x = bench.make_input(9, 32)
    enc, z = bench.count_flops(lambda v: model.encode(v).latent_dist.mode(), x)
    dec, y = bench.count_flops(lambda v: model.decode(v).sample, z)
    assert y.shape == x.shape
    assert enc > 0 and dec > 0
    assert enc + dec == hand[0]


def test_same_input_in_every_case(bench):
    assert torch.equal(bench.make_input(9, 32), bench.make_input(9, 32))


def test_bf16_case_runs_the_models_in_bf16_and_counts_the_same_flops(bench, restore_threads):
    fp32 = bench.speed_worker("vidgen", 9, 32, 1, 1, widths=TINY)
    for precision in ("bf16", "amp"):
        c = bench.speed_worker("vidgen", 9, 32, 1, 1, widths=TINY, precision=precision)
        assert c["output_dtype"] == "torch.bfloat16"
        assert c["flops_encode"] + c["flops_decode"] == fp32["flops_encode"] + fp32["flops_decode"]
    anchor = bench.build("cogvideox_lpb2", TINY, "bf16")
    assert next(anchor.parameters()).dtype == torch.bfloat16
    conv = next(m for m in anchor.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)  # CogVideoX at its best layout
    assert bench.prepare_input(bench.make_input(9, 32), "cogvideox", "bf16").is_contiguous(
        memory_format=torch.channels_last_3d)


def test_table_has_one_row_per_model_with_all_columns(bench, restore_threads):
    cases = [bench.speed_worker(kind, 9, 32, 1, 1, widths=TINY, precision=precision)
             for kind in bench.MODELS for precision in ("fp32", "bf16")]
    ceilings = [bench.ceiling_worker(1, reps=1, n=64)]
    speed = {"command": "python eval/bench_vae_speed.py --tiny", "threads": 1, "date": "2026-01-01T00:00:00",
             "size": 32, **bench.summarize(cases, ceilings)}
    by_kind = speed["by_frames"]["9"]
    assert list(by_kind) == list(bench.MODELS)
    assert len({c["input_sum"] for c in cases if c["precision"] == "fp32"}) == 1  # the same seeded tensor everywhere
    # depth: default CogVideoX > layers_per_block=2 > vidgen, in both parameters and FLOPs
    params = {k: per["fp32"]["params"] for k, per in by_kind.items()}
    flops = {k: per["fp32"]["gflop_per_frame"] for k, per in by_kind.items()}
    assert params["cogvideox"] > params["cogvideox_lpb2"] > params["vidgen"]
    assert flops["cogvideox"] > flops["cogvideox_lpb2"] > flops["vidgen"] > 0
    for c in cases:
        assert c["frames_per_s_min"] <= c["frames_per_s"] <= c["frames_per_s_max"]
        assert 0 < c["fraction_of_ceiling"] and c["peak_rss_mb"] > 0
        assert c["ceiling_dtype"] == c["precision"]  # each precision against its own dtype's ceiling
    assert by_kind["vidgen"]["fp32"]["vidgen_speedup"] == pytest.approx(1.0)
    assert by_kind["vidgen"]["fp32"]["speedup_vs_fp32"] == pytest.approx(1.0)

    table = bench.readme_table({"speed": speed})
    lines = table.splitlines()
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    for column in ("model", "params", "GFLOP / frame", "fp32 frames/s", "bf16 frames/s", "bf16 + compile frames/s"):
        assert column in header
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert len(rows) == len(bench.MODELS)
    for row, kind in zip(rows, bench.MODELS):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(header)
        assert cells[1] == bench.MODELS[kind][0]
        assert cells[3] == f"{by_kind[kind]['fp32']['gflop_per_frame']:.1f}"
        assert cells[4].startswith(f"{by_kind[kind]['fp32']['frames_per_s']:.2f}")
        assert cells[6] == "–"  # no compiled case in this run
    assert "python eval/bench_vae_speed.py --tiny" in lines[-1] and "1 thread," in lines[-1]
    assert "GEMM ceilings fp32" in lines[-1]
