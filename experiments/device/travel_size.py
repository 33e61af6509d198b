#!/usr/bin/env python
"""What one device call sends: the working tree (tracked and untracked-not-ignored files present here) plus the
paths it carries, against the 64 MiB a call may send. Exits 1 (printing ``--hint``) at 63.5 MiB or more.

    python experiments/device/travel_size.py .whl .carry/test_prompts.safetensors --hint "leave ... behind"
    python experiments/device/travel_size.py --each .whl .carry/*     # each path's size, no check
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

LIMIT_MIB = 63.5


def tree_bytes() -> int:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return sum(Path(p).stat().st_size for p in listed if p and Path(p).is_file())


def path_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("carried", nargs="*", type=Path, help="the paths the call names in carry")
    parser.add_argument("--each", action="store_true", help="list each path's size instead of checking their sum")
    parser.add_argument("--hint", default="carry less or shrink the tree", help="what to do when it is too large")
    args = parser.parse_args(argv)
    tree, sizes = tree_bytes() / 2**20, {str(p): path_bytes(p) / 2**20 for p in args.carried if p.exists()}
    if args.each:
        print(f"travels now: the tree, {tree:.1f} MiB, and what the call carries, of: "
              + ", ".join(f"{p} {mib:.1f} MiB" for p, mib in sizes.items()) + " (each call's header names its carry)")
        return 0
    total = tree + sum(sizes.values())
    print(f"travels: tree {tree:.1f} MiB + carried {sum(sizes.values()):.1f} MiB = {total:.1f} MiB of 64")
    if total >= LIMIT_MIB:
        print(f"too large for one device call: {args.hint}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
