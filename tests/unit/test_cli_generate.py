"""``vidgen generate`` in-process on tiny random pipelines saved to a temporary folder: exact frame counts and sizes
of the written MP4 / GIF, the contact sheet, determinism by seed, --num-videos, --init-video, --class, and the
errors (exit code 2 with a ``vidgen generate: error:`` message)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from vidgen.cli import main
from vidgen.generators import AutoregressiveVideoTransformer, MaskedVideoTransformer, make_scheduler
from vidgen.io import probe_video, read_video, write_video
from vidgen.pipelines import AutoregressiveVideoPipeline, MaskedVideoPipeline
from vidgen.testing import perturb_weights
from vidgen.tokenizers import CausalVQVAE

PROMPT = "a red circle moving left"
SIZE = ["--num-frames", "10", "--height", "32", "--width", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """{"masked": folder (text, 384-d MiniLM), "autoregressive": folder (4 classes, no text)}."""
    root = tmp_path_factory.mktemp("pipelines")
    torch.manual_seed(0)
    tok = CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4))
    masked = MaskedVideoTransformer.from_preset("tiny", vocab_size=tok.vocab_size, text_dim=384, max_text_tokens=8,
                                                max_grid=(4, 4, 4))
    ar = AutoregressiveVideoTransformer.from_preset("tiny", vocab_size=tok.vocab_size, num_classes=4,
                                                    max_grid=(4, 4, 4))
    perturb_weights(tok, masked, ar)
    MaskedVideoPipeline(tok, masked, make_scheduler(masked)).save_pretrained(root / "masked")
    AutoregressiveVideoPipeline(tok, ar).save_pretrained(root / "autoregressive")
    return {"masked": str(root / "masked"), "autoregressive": str(root / "autoregressive")}


def _frames(path) -> np.ndarray:
    return read_video(path)[0].numpy()


def _check_video(path, frames=10, size=32) -> None:
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (frames, size, size)


def test_masked_text_to_video_sheet_and_determinism(pipelines, tmp_path, capsys):
    masked = ["generate", PROMPT, "--pipeline", pipelines["masked"], *SIZE, "--steps", "2"]
    assert main([*masked, "--seed", "0", "--out", str(tmp_path / "a.mp4")]) == 0
    out = capsys.readouterr().out
    assert f"video: {tmp_path / 'a.mp4'}" in out and f"contact sheet: {tmp_path / 'a.png'}" in out
    _check_video(tmp_path / "a.mp4")
    assert (tmp_path / "a.png").stat().st_size > 0
    # determinism compared on GIFs: x264 (MP4) output was seen to vary with thread timing under CPU load
    for name, seed in (("a2", 0), ("b", 0), ("c", 1)):
        assert main([*masked, "--seed", str(seed), "--out", str(tmp_path / f"{name}.gif")]) == 0
    assert np.array_equal(_frames(tmp_path / "a2.gif"), _frames(tmp_path / "b.gif"))
    assert not np.array_equal(_frames(tmp_path / "a2.gif"), _frames(tmp_path / "c.gif"))

    # --num-videos 2: <stem>_0 / <stem>_1, video i sampled with seed + i (so _0 is the single seed-0 video)
    assert main([*masked, "--seed", "0", "--num-videos", "2", "--out", str(tmp_path / "many" / "v.gif")]) == 0
    out = capsys.readouterr().out
    for i in (0, 1):
        _check_video(tmp_path / "many" / f"v_{i}.gif")
        assert f"video: {tmp_path / 'many' / f'v_{i}.gif'}" in out
    assert (tmp_path / "many" / "v.png").exists() and not (tmp_path / "many" / "v.gif").exists()
    assert np.array_equal(_frames(tmp_path / "many" / "v_0.gif"), _frames(tmp_path / "a2.gif"))
    assert np.array_equal(_frames(tmp_path / "many" / "v_1.gif"), _frames(tmp_path / "c.gif"))

    # a negative prompt steers the guided sample away
    assert main([*masked, "--seed", "0", "--negative-prompt", "a green star",
                 "--out", str(tmp_path / "n.mp4")]) == 0
    assert not np.array_equal(_frames(tmp_path / "a.mp4"), _frames(tmp_path / "n.mp4"))

    # --init-video: 5 given frames (2 latent frames kept) change the sample of the same seed
    write_video(tmp_path / "init.mp4", torch.rand(3, 5, 48, 40) * 2 - 1, fps=8)
    assert main([*masked, "--seed", "0", "--init-video", str(tmp_path / "init.mp4"),
                 "--out", str(tmp_path / "e.mp4")]) == 0
    _check_video(tmp_path / "e.mp4")
    assert not np.array_equal(_frames(tmp_path / "a.mp4"), _frames(tmp_path / "e.mp4"))


def test_autoregressive_class_gif_without_steps(pipelines, tmp_path, capsys):
    ar = ["generate", "--pipeline", pipelines["autoregressive"], *SIZE, "--seed", "0"]
    assert main([*ar, "--class", "2", "--guidance", "2", "--out", str(tmp_path / "a.gif")]) == 0
    _check_video(tmp_path / "a.gif")
    assert (tmp_path / "a.png").exists()
    assert main([*ar, "--out", str(tmp_path / "u.mp4"), "--fps", "12"]) == 0  # unconditional (the null class)
    info = probe_video(tmp_path / "u.mp4")
    assert (info.num_frames, info.height, info.width, round(info.fps)) == (10, 32, 32, 12)
    capsys.readouterr()
    assert main([*ar, "--class", "2", "--steps", "4", "--out", str(tmp_path / "s.mp4")]) == 2
    assert "vidgen generate: error: --steps" in capsys.readouterr().err
    assert main([*ar, PROMPT, "--out", str(tmp_path / "p.mp4")]) == 2  # not text-conditioned
    assert "vidgen generate: error:" in capsys.readouterr().err
    assert not (tmp_path / "s.mp4").exists() and not (tmp_path / "p.mp4").exists()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_option(pipelines, tmp_path, capsys, precision):
    args = ["generate", PROMPT, "--pipeline", pipelines["masked"], *SIZE, "--steps", "2", "--seed", "0"]
    assert main([*args, "--precision", precision, "--out", str(tmp_path / "v.mp4")]) == 0
    assert f"(seed 0, {precision})" in capsys.readouterr().out
    _check_video(tmp_path / "v.mp4")
    with pytest.raises(SystemExit):  # argparse names the choices
        main([*args, "--precision", "fp16", "--out", str(tmp_path / "w.mp4")])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--class", "1"], "not both"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--num-videos", "0"], "--num-videos"),
    (["--out", "video.avi"], "--out must end with .mp4 or .gif"),
    (["--init-video", "/nonexistent/init.mp4"], "/nonexistent/init.mp4"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),  # before torch is given the count
])
def test_bad_options_exit_2(pipelines, tmp_path, capsys, extra, message):
    args = ["generate", PROMPT, "--pipeline", pipelines["masked"], *SIZE, "--out", str(tmp_path / "v.mp4"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidgen generate: error:") and message in err
    assert not list(tmp_path.iterdir())


def test_missing_pipeline_folder_exit_2(tmp_path, capsys):
    missing = tmp_path / "no-such-pipeline"
    assert main(["generate", PROMPT, "--pipeline", str(missing), "--out", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidgen generate: error:") and str(missing) in err
    (tmp_path / "empty").mkdir()
    assert main(["generate", "--pipeline", str(tmp_path / "empty"), "--out", str(tmp_path / "v.mp4")]) == 2
    assert "model_index.json" in capsys.readouterr().err


def test_fresh_process_loads_the_pipeline(pipelines, tmp_path):
    """``python -m vidgen generate`` in a new interpreter, where no vidgen component module is imported yet (diffusers
    loads components only from imported modules)."""
    out = tmp_path / "fresh.mp4"
    result = subprocess.run([sys.executable, "-m", "vidgen", "generate", "--pipeline", pipelines["autoregressive"],
                             *SIZE, "--seed", "0", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"video: {out}" in result.stdout
    _check_video(out)


def test_a_shipped_name_resolves_to_its_folder_under_pretrained(pipelines, tmp_path, capsys):
    """``--pipeline masked`` is ``<--pretrained>/shapes-masked`` (the registry's folder), with its sampling_config."""
    root = tmp_path / "shipped"
    shutil.copytree(pipelines["masked"], root / "shapes-masked")
    (root / "shapes-masked" / "sampling_config.json").write_text(json.dumps({"num_inference_steps": 2}))
    by_name = ["generate", PROMPT, "--pipeline", "masked", "--pretrained", str(root), *SIZE, "--seed", "0"]
    assert main([*by_name, "--out", str(tmp_path / "name.gif")]) == 0
    by_folder = ["generate", PROMPT, "--pipeline", pipelines["masked"], *SIZE, "--seed", "0", "--steps", "2"]
    assert main([*by_folder, "--out", str(tmp_path / "folder.gif")]) == 0
    assert np.array_equal(_frames(tmp_path / "name.gif"), _frames(tmp_path / "folder.gif"))
    capsys.readouterr()
    assert main(["generate", PROMPT, "--pipeline", "flow", "--pretrained", str(root), "--out",
                 str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidgen generate: error: --pipeline flow: no such folder")
    assert str(root / "shapes-flow") in err


def test_a_story_is_written_chunk_by_chunk_with_exactly_the_asked_frames(pipelines, tmp_path, capsys):
    """--story "p1; p2; p3" --frames-per-prompt 9: 27 frames (no 4k+1 count), made in chunks and streamed to the MP4;
    a JSON story file with a {frame_index: prompt} mapping and --num-frames; the contact sheet shows 8 frames."""
    story = ["generate", "--pipeline", pipelines["masked"], "--height", "32", "--width", "32", "--threads", "1",
             "--steps", "2", "--seed", "0"]
    assert main([*story, "--story", "a red circle moving right; a blue square moving up; a green star",
                 "--frames-per-prompt", "9", "--out", str(tmp_path / "s.mp4")]) == 0
    out = capsys.readouterr().out
    assert "chunk by chunk" in out and f"video: {tmp_path / 's.mp4'}" in out
    _check_video(tmp_path / "s.mp4", frames=27)
    assert (tmp_path / "s.png").stat().st_size > 0
    (tmp_path / "story.json").write_text(json.dumps({"0": "a red circle moving right", "20": "a blue square"}))
    assert main([*story, "--story", str(tmp_path / "story.json"), "--num-frames", "41", "--context-frames", "1",
                 "--out", str(tmp_path / "f.mp4")]) == 0
    _check_video(tmp_path / "f.mp4", frames=41)
    assert main(["generate", PROMPT, "--pipeline", pipelines["masked"], "--height", "32", "--width", "32",
                 "--steps", "2", "--num-frames", "30", "--out", str(tmp_path / "long.mp4")]) == 0  # one long prompt
    _check_video(tmp_path / "long.mp4", frames=30)


@pytest.mark.parametrize("extra, message", [
    (["--story", "a red circle; ; a blue square"], "prompt 2 of 3 is empty"),
    (["--story", "a; b", "--out-gif"], "to .mp4 only"),
    (["--story", "a; b", "--frames-per-prompt", "0"], "--frames-per-prompt must be >= 1"),
    (["--story", "a; b", "--num-frames", "20"], "frame index 32 is beyond the video"),
    (["--story", "a; b", "--num-frames", "20"], "prompt k at frame k x --frames-per-prompt 32 of --num-frames 20"),
    (["--story", "missing.json"], "no such file"),
    (["--story", "{bad}"], "frame index 0"),
    (["--story", "a; b", "--context-frames", "-1"], "--context-frames must be >= 0"),
    (["--story", "a; b", "--context-frames", "9"], "context_frames must be in"),
    (["--story", "a; b", "--prompt-switch", "reset"], "--prompt-switch: MaskedVideoPipeline"),
])
def test_bad_stories_exit_2_and_write_nothing(pipelines, tmp_path, capsys, extra, message):
    out = str(tmp_path / ("v.gif" if "--out-gif" in extra else "v.mp4"))
    extra = [e for e in extra if e != "--out-gif"]
    if "{bad}" in extra:  # a mapping whose key is no frame index
        (tmp_path / "bad.yaml").write_text("first: a red circle\n")
        extra = [str(tmp_path / "bad.yaml") if e == "{bad}" else e for e in extra]
        message = "key 'first' is not a frame index"
    args = ["generate", "--pipeline", pipelines["masked"], "--height", "32", "--width", "32", "--out", out, *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "vidgen generate: error:" in err and message in err  # after the loading bar for model-dependent checks
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".yaml"]


def test_init_video_continues_past_the_window_and_the_sheet_says_how_many_frames_it_shows(pipelines, tmp_path,
                                                                                          capsys, monkeypatch):
    """--init-video with more --num-frames than one window (30 frames: 9 latent frames, windows of 4): streamed chunk
    by chunk, continuing the video; the contact sheet of a long video is labelled with the frames it shows of all."""
    import vidgen.io
    labels, sheet = [], vidgen.io.contact_sheet

    def spy(videos, labels=None, **options):
        seen.extend(labels or [])
        return sheet(videos, labels=labels, **options)
    seen = labels
    monkeypatch.setattr(vidgen.io, "contact_sheet", spy)
    write_video(tmp_path / "init.mp4", torch.rand(3, 9, 32, 32) * 2 - 1, fps=8)
    args = ["generate", PROMPT, "--pipeline", pipelines["masked"], "--height", "32", "--width", "32", "--threads",
            "1", "--steps", "2", "--seed", "0", "--num-frames", "30"]
    assert main([*args, "--init-video", str(tmp_path / "init.mp4"), "--out", str(tmp_path / "c.mp4")]) == 0
    assert "chunk by chunk" in capsys.readouterr().out
    _check_video(tmp_path / "c.mp4", frames=30)
    assert labels == [f"{PROMPT}, 8 of 30 frames (seed 0)"]
    assert main([*args, "--out", str(tmp_path / "plain.mp4")]) == 0  # the same seed without the video to continue
    assert not np.array_equal(_frames(tmp_path / "c.mp4")[:, 12:], _frames(tmp_path / "plain.mp4")[:, 12:])


def test_init_video_on_a_pipeline_that_cannot_continue_exits_2(tiny_pipeline, tmp_path, capsys):
    tiny_pipeline("causal").save_pretrained(tmp_path / "causal")
    write_video(tmp_path / "init.mp4", torch.rand(3, 5, 32, 32) * 2 - 1, fps=8)
    assert main(["generate", PROMPT, "--pipeline", str(tmp_path / "causal"), *SIZE, "--init-video",
                 str(tmp_path / "init.mp4"), "--out", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err
    assert "vidgen generate: error: --init-video: CausalVideoPipeline cannot continue a video" in err
    assert not (tmp_path / "v.mp4").exists()


def test_prompt_switch_reaches_the_causal_stream(tiny_pipeline, tmp_path, monkeypatch):
    from vidgen.pipelines import CausalVideoPipeline
    tiny_pipeline("causal").save_pretrained(tmp_path / "causal")
    seen, stream = [], CausalVideoPipeline.stream

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("prompt_switch"))
        return stream(self, *args, **kwargs)

    monkeypatch.setattr(CausalVideoPipeline, "stream", spy)
    story = ["generate", "--pipeline", str(tmp_path / "causal"), "--story", "a red circle; a blue square",
             "--frames-per-prompt", "5", "--height", "32", "--width", "32", "--threads", "1", "--seed", "0"]
    assert main([*story, "--prompt-switch", "reset", "--out", str(tmp_path / "reset.mp4")]) == 0
    assert main([*story, "--out", str(tmp_path / "default.mp4")]) == 0
    assert seen == ["reset", None]  # left out: the folder's own setting
    _check_video(tmp_path / "reset.mp4")


def test_an_unreadable_init_video_kind_names_the_kinds_taken(pipelines, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a video")
    assert main(["generate", PROMPT, "--pipeline", pipelines["masked"], *SIZE, "--init-video",
                 str(tmp_path / "notes.txt"), "--out", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err
    assert "unsupported format '.txt'; give a video (.mp4" in err and "an image (.png .jpg .jpeg)" in err
    assert not (tmp_path / "v.mp4").exists()


def test_an_interrupt_exits_130_without_a_traceback(pipelines, tmp_path, capsys, monkeypatch):
    import vidgen.cli.generate as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "generate", interrupted)
    assert main(["generate", PROMPT, "--pipeline", pipelines["masked"], "--out", str(tmp_path / "v.mp4")]) == 130
    assert capsys.readouterr().err == "vidgen generate: interrupted\n"


def test_sigterm_exits_143_and_leaves_no_partial_file(pipelines, tmp_path, capsys, monkeypatch):
    """SIGTERM (a scheduler's or a container's stop) goes the way of Ctrl-C: the writer removes its hidden partial
    file, the command says so and exits 128 + 15, and the process's own handler is back afterwards."""
    import signal
    import time

    import vidgen.cli.generate as cli
    from vidgen.io import VideoWriter

    def terminated(args):
        with VideoWriter(tmp_path / "v.mp4", fps=8) as writer:
            writer.write(torch.zeros(3, 2, 64, 64))
            assert list(tmp_path.iterdir())  # the partial file, hidden until it is complete
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises before this ends
        raise AssertionError("SIGTERM was not raised in the main thread")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "generate", terminated)
    assert main(["generate", PROMPT, "--pipeline", pipelines["masked"], "--out", str(tmp_path / "v.mp4")]) == 143
    assert capsys.readouterr().err == "vidgen generate: terminated\n"
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) is before


def test_a_blank_prompt_is_refused_before_loading(tmp_path, capsys):
    assert main(["generate", "   ", "--pipeline", "nowhere", "--out", str(tmp_path / "v.mp4")]) == 2
    assert "the prompt '   ' is blank; leave it out to sample unconditionally" in capsys.readouterr().err


def test_the_import_notices_are_dropped_by_one_filter_however_many_commands_run():
    import logging

    from vidgen.cli import IMPORT_NOTICES, _drop_import_notice, quiet_import_notices
    quiet_import_notices()
    quiet_import_notices()
    for name, text in IMPORT_NOTICES.items():
        logger = logging.getLogger(name)
        assert logger.filters.count(_drop_import_notice) == 1  # beside any filter the library adds itself
        assert not logger.filter(logging.LogRecord(name, logging.WARNING, "", 0, f"x {text} y", (), None))
        assert logger.filter(logging.LogRecord(name, logging.WARNING, "", 0, "another warning", (), None))
