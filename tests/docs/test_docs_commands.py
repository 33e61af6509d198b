"""Every shell command in README.md and docs/*.md (their ```bash blocks) is tested, and the pages and help texts agree
with the code.

Each command is matched by exactly one rule of :data:`RULES`, which says how it is tested: ``make`` targets exist in
the Makefile; ``vidgen`` commands parse with vidgen's own parser (an unknown or misspelt option fails); scripts and
launchers name files that exist (configs, scripts). Every repository path a command names must exist, unless it is a
placeholder for the reader's own data (:data:`PLACEHOLDERS`). The ``vidgen generate`` commands run: at the smallest
settings that still exercise them (fast), and as written on the shipped pipelines (slow: ``make test-slow``). A new
command in the docs that no rule matches fails :func:`test_every_documented_command_has_a_rule`.

Lists of the shipped pipelines, in the docs and in ``--help``, must name every pipeline of
:data:`vidgen.pipelines.PIPELINE_REGISTRY` (counts in words too)."""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

#: the reader's own files and folders in the commands (not in the repository)
PLACEHOLDERS = re.compile(r"^(/data/|runs/|outputs/|shards/?|clips[/.]|data/real_videos|UCF-101|Wan-folder|"
                          r"path/to/|story\.(yaml|json)|video\.mp4|continued\.mp4|long\.mp4|story\.mp4|fvd\.json|"
                          r"fid\.json|\$)")
#: (rule name, regex on the command) -> how a command is tested; every command matches exactly one
RULES = {
    "make": r"^make [\w-]+$",
    "vidgen": r"^vidgen ",
    "python -m vidgen": r"^python -m vidgen\.(demo|training\.finetune) ",
    "script": r"^python (tokenizers|pipelines|eval|tests/helpers)/\w+\.py( |$)",
    "launcher": r"^(accelerate launch|torchrun) ",
    "pip": r"^pip install -e '?\.\[\w+\]'?$",
}


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every command of every ```bash block: continuation lines joined, comments and a
    trailing ``&`` dropped."""
    out = []
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text()):
            if lang != "bash":
                continue
            for line in body.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words and words[-1] == "&":
                    words = words[:-1]
                if words:
                    out.append((page.relative_to(ROOT).as_posix(), shlex.join(words)))
    return out


COMMANDS = documented_commands()


def rule_of(command: str) -> list[str]:
    return [name for name, pattern in RULES.items() if re.search(pattern, command)]


def test_every_documented_command_has_a_rule():
    assert len(COMMANDS) > 40
    unmatched = [(page, c) for page, c in COMMANDS if len(rule_of(c)) != 1]
    assert not unmatched, f"commands with no rule (or several) in tests/docs/test_docs_commands.py: {unmatched}"


def repository_paths(command: str) -> list[str]:
    """The words (and ``key=value`` values) of a command that name a file or folder of the repository."""
    paths = []
    for word in shlex.split(command):
        value = word.split("=", 1)[1] if re.match(r"^[\w.]+=", word) else word
        if value.startswith("-") or value in ("...", ".") or PLACEHOLDERS.search(value):
            continue
        if re.match(r"^(configs|experiments|pretrained|tokenizers|pipelines|eval|tests|docs)/", value):
            paths.append(value)
    return paths


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}:{i}" for i, (p, _) in enumerate(COMMANDS)])
def test_every_path_a_command_names_exists(page, command):
    written = {"docs/app.png", "docs/results/app_screenshot.json"}  # outputs of the screenshot command
    missing = [p for p in repository_paths(command) if p not in written and not (ROOT / p).exists()]
    assert not missing, f"{page}: `{command}` names missing paths {missing}"


def test_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    missing = [c for _, c in COMMANDS if rule_of(c) == ["make"] and c.split()[1] not in targets]
    assert not missing, missing


def test_pip_extras_exist():
    pyproject = (ROOT / "pyproject.toml").read_text()
    for _, command in COMMANDS:
        if rule_of(command) == ["pip"]:
            extra = re.search(r"\[(\w+)\]", command).group(1)
            assert re.search(rf"^{extra}\s*=", pyproject, re.M), f"`{command}`: no extra {extra!r} in pyproject.toml"


def _vidgen_argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[:2] == ["accelerate", "launch"]:  # accelerate launch ... -m vidgen data encode ...
        words = words[words.index("-m") + 2:]
        return [w for w in words if w != "..."]
    return words[1:]


@pytest.mark.parametrize("page, command", [(p, c) for p, c in COMMANDS if rule_of(c) == ["vidgen"]])
def test_vidgen_commands_parse(page, command):
    from vidgen.cli import build_parser
    argv = [w for w in _vidgen_argv(command) if w != "..."]
    if argv[:2] == ["eval", "fid"] and len(argv) == 2:
        pytest.skip("a synopsis")
    args = build_parser().parse_args(argv)  # argparse exits (SystemExit) on an unknown option
    assert callable(args.func)


@pytest.mark.parametrize("page, command", [(p, c) for p, c in COMMANDS if rule_of(c) in (["script"], ["launcher"])])
def test_scripts_and_configs_exist(page, command):
    words = shlex.split(command)
    scripts = [w for w in words if w.endswith(".py")]
    assert scripts or "-m" in words, command
    for script in scripts:
        assert (ROOT / script).is_file(), f"{page}: `{command}`: no {script}"
    for flag in ("--config", "--config_file"):
        if flag in words and words[words.index(flag) + 1] != "...":
            assert (ROOT / words[words.index(flag) + 1]).is_file(), f"{page}: `{command}`: no config"


def test_script_help_texts_name_configs_that_exist():
    """The commands quoted in the training scripts' --help (their docstrings) name configs that exist."""
    for script in ("pipelines/distill.py", "pipelines/train_generator.py", "tokenizers/train_tokenizer.py"):
        text = (ROOT / script).read_text()
        doc = text[:text.index('"""', text.index('"""') + 3)]
        for path in re.findall(r"--config (\S+\.ya?ml)", doc):
            assert (ROOT / path).is_file(), f"{script} --help cites {path}, which does not exist"


# ------------------------------------------------------------------------------------- the generate commands
GENERATE = [(p, c) for p, c in COMMANDS if c.startswith("vidgen generate ")]


def _shell_words(command: str, folder: Path, small: bool) -> list[str]:
    """A documented generate command made runnable in ``folder``: a placeholder pipeline (PATH) is the shipped
    flow pipeline (the masked one for --class, which takes none: so the flow folder is given a class-free call),
    "..." a prompt, a story file a small schedule, and ``small``: 32x32, 2 steps, 9 frames per prompt."""
    words = shlex.split(command)
    words = ["circle moving left on a black background" if w == "..." else w for w in words]
    if "PATH" in words:
        words[words.index("PATH")] = "flow"
    if "--class" in words:  # no shipped pipeline is class-conditioned: the documented refusal
        return []
    if "story.yaml" in words:
        (folder / "story.yaml").write_text("{0: a red circle moving right, 9: a blue square moving up}\n")
    for name in ("video.mp4", "clip.mp4"):
        if name in words:
            shutil.copy(folder / "outputs" / "circle.mp4", folder / name)
    if small:
        out = []
        for i, w in enumerate(words):
            if i and words[i - 1] == "--num-frames":
                w = str(min(int(w), 21))  # 21 frames: 6 latent frames, one more than a window
            if i and words[i - 1] == "--frames-per-prompt":
                w = "9"
            if i and words[i - 1] == "--num-videos":
                w = "2"
            out.append(w)
        words = out + ["--height", "32", "--width", "32", "--threads", "1"]
        if "autoregressive" not in " ".join(words):
            words += ["--steps", "2"]
    return words[1:]


def _run_generate(tmp_path, small: bool, monkeypatch, capsys) -> list[str]:
    """Each generate line in turn, in-process (``vidgen.cli.main``) from ``tmp_path`` holding ``pretrained/``."""
    from vidgen.cli import main
    (tmp_path / "pretrained").symlink_to(ROOT / "pretrained")
    (tmp_path / "outputs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ran = []
    for page, command in GENERATE:
        argv = _shell_words(command, tmp_path, small)
        if not argv:
            continue
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, f"{page}: `{command}` as {argv}:\n{out.err[-3000:]}"
        assert "video: " in out.out and "contact sheet: " in out.out, out.out
        ran.append(command)
    return ran


def test_the_generate_commands_run_at_small_settings(tmp_path, monkeypatch, capsys):
    """README's and the docs' ``vidgen generate`` lines at 32x32 and 2 steps, in their order (the continuation reads
    the first line's video), each longer video one latent frame past the window: continuation and stories go
    chunk by chunk."""
    from vidgen.io import probe_video
    ran = _run_generate(tmp_path, True, monkeypatch, capsys)
    assert any("--init-video" in c for c in ran) and any("--story" in c for c in ran)
    assert probe_video(tmp_path / "outputs" / "continued.mp4").num_frames == 21


@pytest.mark.slow
def test_the_generate_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """The same lines at their written sizes on the shipped pipelines (the README's continuation: 33 frames)."""
    from vidgen.io import probe_video
    _run_generate(tmp_path, False, monkeypatch, capsys)
    assert probe_video(tmp_path / "outputs" / "continued.mp4").num_frames == 33


def test_generate_refuses_class_on_the_shipped_pipelines_by_name(tmp_path):
    """docs/pipelines.md's --class line is for class-conditioned folders; a shipped (text) one refuses it."""
    from vidgen.cli import main
    code = main(["generate", "--pipeline", str(ROOT / "pretrained/shapes-masked"), "--class", "3", "--num-frames",
                 "5", "--height", "32", "--width", "32", "--out", str(tmp_path / "c.mp4")])
    assert code == 2 and not (tmp_path / "c.mp4").exists()


# ------------------------------------------------------------------------------- lists of the shipped pipelines
def _registry() -> list[str]:
    from vidgen.pipelines import PIPELINE_REGISTRY
    return list(PIPELINE_REGISTRY)


NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}


def test_docs_count_and_list_every_shipped_pipeline():
    names = _registry()
    wrong = []
    for page in PAGES:
        text = page.read_text()
        for word in re.findall(r"\b(\w+) (?:shipped|trained) (?:text-to-video )?pipelines\b", text):
            if word.lower() in NUMBERS and NUMBERS[word.lower()] != len(names):
                wrong.append((page.name, f"{word} shipped pipelines"))
        # an enumeration of shipped names starts `masked`, `flow`: it must go on to name them all
        for match in re.finditer(r"`masked`, `flow`(?:,?\s+(?:and\s+)?`[\w-]+`)*", text):
            listed = re.findall(r"`([\w-]+)`", match.group(0))
            if set(listed) != set(names):
                wrong.append((page.name, match.group(0)[:80]))
    assert not wrong, f"pipeline counts / lists that disagree with PIPELINE_REGISTRY {names}: {wrong}"


@pytest.mark.parametrize("command", ["generate", "serve"])
def test_help_lists_every_shipped_pipeline(command, capsys):
    from vidgen.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert "(" + ", ".join(_registry()) + ")" in text, text


def test_vidgen_info_lists_the_shipped_pipelines(capsys):
    from vidgen.cli import main
    assert main(["info", "--pretrained", str(ROOT / "pretrained")]) == 0
    out = capsys.readouterr().out
    listed = out[out.index("shipped pipelines"):]
    for name in _registry():
        assert re.search(rf"^  {re.escape(name)} .*\(\w+; present\)$", listed, re.M), listed
