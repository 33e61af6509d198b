"""README.md is a short front door whose examples run: every ```python block is executed as written, in a fresh
interpreter from the repository root against the shipped folders, and every relative link in README.md and
docs/*.md points at a file that exists."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_LINES = 250

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def code_blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def relative_links(text: str) -> list[str]:
    """Link and image targets outside code, without external URLs and in-page anchors."""
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
    targets = []
    for target in LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def broken_links(page: Path) -> list[str]:
    return [target for target in relative_links(page.read_text()) if not (page.parent / target).exists()]


PYTHON_BLOCKS = code_blocks(README.read_text(), "python")


def test_readme_is_a_short_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/ (at most {MAX_LINES})"
    assert len(PYTHON_BLOCKS) >= 2, "the quickstart and the pieces example are gone"
    assert any(hub_id in block for hub_id in HUB_STANDINS for block in PYTHON_BLOCKS)  # a stand-in nobody uses: drop


def test_quickstart_calls_a_shipped_folder_with_only_a_prompt():
    quickstart = PYTHON_BLOCKS[0]
    assert len(quickstart.strip().splitlines()) <= 5
    folder = re.search(r'load_pipeline\("(pretrained/[\w-]+)"\)', quickstart)
    assert folder and (ROOT / folder.group(1) / "model_index.json").is_file(), "the quickstart loads no shipped folder"
    assert re.search(r'pipe\("[^"]+"\)', quickstart), "the quickstart must call the pipeline with only a prompt"


#: hub ids the README shows (for users with the hub) -> writes a tiny random stand-in of the same class into a folder,
#: laid out as the hub folder is: the block runs as written, only the download differs (no hub here)
HUB_STANDINS = {"Wan-AI/Wan2.1-T2V-1.3B-Diffusers": lambda folder: __import__(
    "vidgen.pipelines.diffusers_tiny").pipelines.diffusers_tiny.tiny_native_pipeline("wan").save_pretrained(folder)}


@pytest.fixture(scope="module")
def block_runs(tmp_path_factory):
    """Every block started at once, each in its own interpreter on one thread: most of a block's time is importing
    torch and vidgen, which is single-threaded, so the blocks share the cores instead of queueing."""
    folder = tmp_path_factory.mktemp("readme_blocks")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TORCHINDUCTOR_CACHE_DIR=str(folder / "inductor"), OMP_NUM_THREADS="1")
    runs = []
    for index, block in enumerate(PYTHON_BLOCKS):
        for hub_id, make in HUB_STANDINS.items():
            if f'"{hub_id}"' in block:
                local = folder / hub_id.replace("/", "--")
                if not local.exists():
                    make(local)
                block = block.replace(f'"{hub_id}"', f'"{local}"')
        log = folder / f"block{index + 1}.log"  # a file, not a pipe: a chatty block cannot fill a pipe and stall
        with open(log, "w") as out:
            runs.append((subprocess.Popen([sys.executable, "-c", block], cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT), log))
    yield runs
    for run, _ in runs:  # a failed test may have left its block running
        if run.poll() is None:
            run.kill()
            run.wait()


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs(index, block_runs):
    run, log = block_runs[index]
    try:
        run.wait(timeout=300)
    except subprocess.TimeoutExpired:
        run.kill()
        raise
    assert run.returncode == 0, f"README python block {index + 1} failed:\n{PYTHON_BLOCKS[index]}\n" \
                                f"{log.read_text()[-3000:]}"


def test_relative_links_point_at_files():
    pages = [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "api").glob("*.md"))]
    broken = {page.relative_to(ROOT).as_posix(): links for page in pages if (links := broken_links(page))}
    assert not broken, f"relative links to missing files: {broken}"


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("# there\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#there) [gone](missing.md) ![img](missing.png) [web](https://example.com) "
                    "[anchor](#top) `[code](nope.md)`\n```python\nx = [a](b)\n```\n")
    assert broken_links(page) == ["missing.md", "missing.png"]
