"""Runs the three harness files with pytest's --junitxml, as run.sh does (one pytest process per file, from a scratch
copy of this folder outside the project), and writes docs/results/diffusers_test_mixins.json: for each vidgen class,
every test with passed / failed / skipped / xfailed / deselected and its reason (skip reason, xfail reason, or the
first line of the failure), totals per class, per file and overall, the diffusers test trees used, the installed
diffusers version, the vidgen commit and the CPU (eval/results.py's provenance block).

    .venv/bin/python experiments/diffusers_mixins/record.py            # vidgen at HEAD (a `git archive` snapshot)
    .venv/bin/python experiments/diffusers_mixins/record.py --vidgen-root /work/main   # the working tree as it is

The diffusers trees are extracted from the bare mirror (README.md's set-up) into the scratch folders, each with a
`.diffusers_commit` file naming the commit it was extracted from; a folder without it, or naming another commit, is
extracted again. Extra arguments after `--` go to pytest.

Why 58eb52c080: the installed diffusers is 0.42.1, but the mirror has no v0.42.1 tag (its newest release tag is
v0.40.0); the newest test tree it holds is `main` at 58eb52c080 (version string 0.40.0.dev0, 10 commits past v0.40.0).
The results file records these facts as read from the mirror at run time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
sys.path.insert(0, str(PROJECT / "eval"))
sys.path.insert(0, str(HERE))

from results import write_result  # noqa: E402  (first: its import is the run's start, for the load average)

import diffusers  # noqa: E402  (its version goes into the provenance block)
from expectations import DESELECTED, EXPECTED_FAILURES  # noqa: E402

MIRROR = "/work/.mirror/huggingface+diffusers/repo"
TESTS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"  # main: the newest test tree in the mirror
COGVIDEOX_COMMIT = "9e29014c63ac59e00bab0f41115285d9f50618b8"  # CogVideoX's unittest-style composition (see the file)
COGVIDEOX_FILE = "tests/pipelines/cogvideo/test_cogvideox.py"
COMMON_FILE = "tests/pipelines/test_pipelines_common.py"

FILES = {  # harness file -> what it composes
    "test_vidgen_pipelines.py": f"pytest-style PipelineTesterMixin + MemoryTesterMixin "
                                f"(tests/pipelines/testing_utils at {TESTS_COMMIT[:10]})",
    "test_vidgen_pipelines_common.py": f"unittest-style PipelineTesterMixin (test_pipelines_common.py at "
                                       f"{TESTS_COMMIT[:10]}) with CogVideoXPipelineFastTests' settings at "
                                       f"{COGVIDEOX_COMMIT[:10]}",
    "test_vidgen_tokenizer_models.py": f"ModelTesterMixin, TrainingTesterMixin, MemoryTesterMixin, "
                                       f"AutoencoderTesterMixin (tests/models at {TESTS_COMMIT[:10]})",
}
PIPELINES = ("FlowVideoPipeline", "MaskedVideoPipeline", "AutoregressiveVideoPipeline")
MODELS = ("CausalVAE", "CausalVQVAE")
STATUSES = ("passed", "failed", "skipped", "xfailed", "deselected")


def vidgen_class(test_class: str) -> str:
    """The vidgen class a harness test class tests: the longest vidgen class name its name contains."""
    names = [n for n in PIPELINES + MODELS if n in test_class]
    if not names:
        raise ValueError(f"no vidgen class in test class name {test_class!r}")
    return max(names, key=len)


def git(*args: str, git_dir: str | None = None) -> str:
    cmd = ["git", f"--git-dir={git_dir}"] if git_dir else ["git", "-C", str(PROJECT)]
    return subprocess.run([*cmd, *args], check=True, capture_output=True, text=True).stdout.rstrip("\n")


def extract(commit: str, paths: list[str], root: Path) -> None:
    """`git archive <commit> <paths>` from the mirror into root, unless root already holds exactly that commit."""
    marker = root / ".diffusers_commit"
    if marker.is_file() and marker.read_text().strip() == commit:
        return
    if not Path(MIRROR).is_dir():
        sys.exit(f"{root} does not hold diffusers {commit[:10]} and the mirror {MIRROR} is missing "
                 "(README.md: fetch github:huggingface/diffusers)")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    archive = subprocess.run(["git", f"--git-dir={MIRROR}", "archive", commit, *paths], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    marker.write_text(commit + "\n")


def vidgen_snapshot(commit: str, scratch: Path) -> Path:
    """The committed tree at `commit`, archived into scratch (not a checkout: /work/main's work tree is untouched)."""
    root = scratch / f"vidgen-{commit[:10]}"
    marker = root / ".vidgen_commit"
    if not (marker.is_file() and marker.read_text().strip() == commit):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(PROJECT), "archive", commit, "vidgen"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
        marker.write_text(commit + "\n")
    return root


def first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def parse_junit(path: Path, file: str) -> dict[str, dict]:
    """{node id: {"status", "reason", "time_s"}} from one junit XML."""
    tests = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_class = case.get("classname").split(".")[-1]
        node = f"{file}::{test_class}::{case.get('name')}"
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            status, reason = "failed", first_line(failure.get("message")) or first_line(failure.text)
        elif error is not None:  # an error in set-up or tear-down: counted as a failure, said so
            status, reason = "failed", "error: " + (first_line(error.get("message")) or first_line(error.text))
        elif skipped is not None and skipped.get("type") == "pytest.xfail":
            status, reason = "xfailed", skipped.get("message", "")
        elif skipped is not None:
            status, reason = "skipped", skipped.get("message", "")
        else:
            status, reason = "passed", ""
        tests[node] = {"status": status, "reason": reason, "time_s": round(float(case.get("time", 0)), 3)}
    return tests


def totals(tests: dict[str, dict]) -> dict[str, int]:
    counts = Counter(t["status"] for t in tests.values())
    return {**{s: counts.get(s, 0) for s in STATUSES}, "total": len(tests)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vidgen-root", help="run against this vidgen tree instead of a snapshot of HEAD")
    parser.add_argument("--scratch", default="/work/scratch", type=Path)
    parser.add_argument("--out", default=str(PROJECT / "docs/results/diffusers_test_mixins.json"))
    parser.add_argument("--files", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = parser.parse_args()

    vidgen_commit = git("rev-parse", "HEAD")
    tests_root = args.scratch / "diffusers-tests"
    legacy_root = args.scratch / f"diffusers-cogvideox-{COGVIDEOX_COMMIT[:7]}"
    extract(TESTS_COMMIT, ["tests"], tests_root)
    extract(COGVIDEOX_COMMIT, [COGVIDEOX_FILE], legacy_root)
    if args.vidgen_root:
        vidgen_root = Path(args.vidgen_root).resolve()
        dirty = git("status", "--porcelain", "--", "vidgen") if vidgen_root == PROJECT else None
        vidgen_tree = {"root": str(vidgen_root), "snapshot_of_head": False,
                       "uncommitted_changes_in_vidgen": dirty.splitlines() if dirty is not None else "unknown"}
    else:
        vidgen_root = vidgen_snapshot(vidgen_commit, args.scratch)
        vidgen_tree = {"root": str(vidgen_root), "snapshot_of_head": True, "uncommitted_changes_in_vidgen": []}

    harness = args.scratch / "difftests"  # a fresh copy of this folder, outside the project (as README.md runs it)
    shutil.rmtree(harness, ignore_errors=True)
    shutil.copytree(HERE, harness, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    threads = int(os.environ.get("VIDGEN_TEST_THREADS", "1"))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": f"{tests_root}:{vidgen_root}", "DIFFUSERS_TESTS_ROOT": str(tests_root),
           "DIFFUSERS_COGVIDEOX_LEGACY_ROOT": str(legacy_root),
           "VIDGEN_SCRATCH_DEPS": str(args.scratch / "pydeps"), "VIDGEN_TEST_THREADS": str(threads)}
    all_tests, runs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for file in args.files:
            junit, deselected_log = Path(tmp) / f"{file}.xml", Path(tmp) / f"{file}.deselected"
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-W", "ignore",
                   f"--junitxml={junit}", *args.pytest_args, file]
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=harness, env={**env, "VIDGEN_MIXINS_DESELECTED_LOG": str(deselected_log)},
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            summary = first_line("\n".join(reversed(proc.stdout.strip().splitlines())))
            print(f"{file:34s} {summary}  (rc {proc.returncode}, {wall:.0f} s)", flush=True)
            if not junit.is_file():
                sys.exit(f"{file}: pytest wrote no junit XML (rc {proc.returncode}):\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
            tests = parse_junit(junit, file)
            for node in (deselected_log.read_text().split() if deselected_log.is_file() else []):
                name = node.split("::")[-1].split("[")[0]
                tests[node] = {"status": "deselected", "reason": DESELECTED[(file, name)], "time_s": 0.0}
            all_tests.update(tests)
            runs[file] = {"composes": FILES[file], "pytest_exit_code": proc.returncode,
                          "pytest_summary": summary, "wall_s": round(wall, 1), "totals": totals(tests)}

    classes = {}
    for name in PIPELINES + MODELS:
        tests = {n: t for n, t in all_tests.items() if vidgen_class(n.split("::")[1]) == name}
        if not tests:
            continue
        classes[name] = {
            "kind": "pipeline" if name in PIPELINES else "model",
            "totals": totals(tests),
            "by_file": {f: totals({n: t for n, t in tests.items() if n.startswith(f + "::")})
                        for f in args.files if any(n.startswith(f + "::") for n in tests)},
            "skip_reasons": dict(Counter(t["reason"] for t in tests.values() if t["status"] == "skipped")
                                 .most_common()),
            "tests": dict(sorted(tests.items())),
        }
    overall = totals(all_tests)
    failures = {n: t["reason"] for n, t in all_tests.items() if t["status"] == "failed"}

    version = diffusers.__version__
    has_mirror = Path(MIRROR).is_dir()
    newest_tag = git("tag", "--sort=-v:refname", git_dir=MIRROR).split()[0] if has_mirror else None
    common_same = (git("rev-parse", f"{TESTS_COMMIT}:{COMMON_FILE}", git_dir=MIRROR)
                   == git("rev-parse", f"{COGVIDEOX_COMMIT}:{COMMON_FILE}", git_dir=MIRROR)) if has_mirror else None
    has_version_tag = bool(git("tag", "-l", f"v{version}", git_dir=MIRROR)) if has_mirror else None
    past_tag = int(git("rev-list", "--count", f"{newest_tag}..{TESTS_COMMIT}", git_dir=MIRROR)) if has_mirror else None
    payload = {
        "vidgen_commit": vidgen_commit,
        "vidgen_tree": vidgen_tree,
        "diffusers_installed": version,
        "diffusers_test_tree": {
            "commit": TESTS_COMMIT,
            "ref": "main of the mirror (version string 0.40.0.dev0)",
            "cogvideox_unittest_composition_commit": COGVIDEOX_COMMIT,
            "test_pipelines_common_identical_at_both_commits": common_same,
            "mirror": MIRROR,
            "mirror_has_installed_version_tag": has_version_tag,
            "mirror_newest_release_tag": newest_tag,
            "commits_past_newest_release_tag": past_tag,
            "why": (f"the installed diffusers is {version}, but the mirror has no v{version} tag (its newest release "
                    f"tag is {newest_tag}); main at {TESTS_COMMIT[:10]}, {past_tag} commits past {newest_tag}, is the "
                    "newest test tree the mirror holds, so that is the tree used"),
        },
        "threads": threads,
        "totals": overall,
        "files": runs,
        "classes": classes,
        "failures": failures,
        "deselected_and_expected_failures": {
            "deselected": {f"{f}::*::{t}": reason for (f, t), reason in DESELECTED.items()},
            "expected_failures": {f"{f}::*::{t}": {"raises": exc.__name__, "message_pattern": pattern,
                                                     "reason": reason}
                                  for (f, t), (exc, pattern, reason) in EXPECTED_FAILURES.items()},
            "nothing_injected": "vidgen's classes are not put into diffusers.pipelines (or any diffusers namespace)",
        },
        "notes": [
            "Status 'xfailed': a strict expected failure (expectations.py) that failed with the expected exception "
            "and message; any other outcome of that test counts as failed.",
            "Status 'failed' includes errors in set-up or tear-down (their reason starts with 'error:').",
            CI_SUBSET_NOTE,
        ],
    }
    out = write_result(args.out, payload, threads=threads,
                       command="python experiments/diffusers_mixins/record.py " + " ".join(sys.argv[1:]))
    print(f"wrote {out}: {overall}")
    for node, reason in failures.items():
        print(f"FAILED {node}: {reason}")


CI_SUBSET_NOTE = (
    "No subset of these tests runs in make test, because it cannot be built: CI has a clean checkout with only the "
    "package registries (no GitHub), no PyPI package checked ships diffusers' test mixins (diffusers 0.42.1's sdist "
    "has only tests/testing_utils.py and its wheel no tests at all; the PyPI forks diffusersv 0.28.0.dev0, "
    "diffusers-qaic 0.24.0 and diffusers-unchained 0.16.2 ship none either), and the project may not copy diffusers' "
    "code. tests/docs/test_diffusers_mixins_record.py checks instead that docs/pipelines.md quotes this file's totals.")

if __name__ == "__main__":
    main()
