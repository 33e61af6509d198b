#!/usr/bin/env python
"""Open the demo page in a real (headless) browser: count the videos and images that loaded, take a screenshot.

    apt-get install -y chromium          # Debian's package; any Chromium / Chrome binary works
    python eval/check_demo_page.py outputs/demo/index.html --screenshot docs/demo_page.png

The page reports its own media state (``media: N/N videos loaded, M/M images loaded``); this reads that line from
the DOM after the page ran for a few seconds, and exits 1 unless every video and image loaded.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("check_demo_page: no Chromium / Chrome found (apt-get install -y chromium)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", nargs="?", default="outputs/demo/index.html")
    parser.add_argument("--screenshot", default=None, help="PNG to write (e.g. docs/demo_page.png)")
    parser.add_argument("--size", default="1280,1400", help="window size for the screenshot")
    parser.add_argument("--wait-ms", type=int, default=40000,
                        help="virtual time the page runs before reading (192 videos need ~30 s in headless Chromium)")
    args = parser.parse_args(argv)
    url = Path(args.page).resolve().as_uri()
    common = [browser(), "--headless", "--no-sandbox", "--autoplay-policy=no-user-gesture-required",
              f"--virtual-time-budget={args.wait_ms}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=300).stdout
    found = re.search(r"media: (\d+)/(\d+) videos loaded, (\d+)/(\d+) images loaded([^<]*)", dom)
    if not found:
        print("check_demo_page: the page did not report its media state", file=sys.stderr)
        return 1
    print(found.group(0))
    if args.screenshot:
        Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*common, f"--window-size={args.size}", f"--screenshot={Path(args.screenshot).resolve()}", url],
                       capture_output=True, timeout=300, check=True)
        print(f"screenshot: {args.screenshot}")
    videos_ok = found.group(1) == found.group(2) and not found.group(5).strip(", ")
    return 0 if videos_ok and found.group(3) == found.group(4) else 1


if __name__ == "__main__":
    sys.exit(main())
