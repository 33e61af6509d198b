#!/usr/bin/env python
"""Open the demo page in a real (headless) browser: count the videos and images that loaded, take a screenshot.

    apt-get install -y chromium          # Debian's package; any Chromium / Chrome binary works
    python eval/check_demo_page.py outputs/demo/index.html --screenshot docs/demo_page.png

The page reports its own media state (``media: N/N videos loaded, M/M images loaded``, refreshed every 0.5 s). This
drives Chromium through its DevTools protocol over ``--remote-debugging-pipe`` (no websocket library, no port) and
reads that line in real time until every video and image has loaded, one has failed, or ``--timeout-s`` passes;
exits 1 unless everything loaded. Why not ``--dump-dom --virtual-time-budget``, as before: the page then runs on
virtual time while media decode on real threads, so how many of 192 videos were ready at the dump varied from 28 to
192 between runs on 2 cores (none failing), and even three attempts failed on one fresh clone.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

STATUS = re.compile(r"media: (\d+)/(\d+) videos loaded, (\d+)/(\d+) images loaded(.*)")


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("check_demo_page: no Chromium / Chrome found (apt-get install -y chromium)")


def _outcome(status: re.Match) -> tuple[bool, bool]:
    """(every video and image loaded, some file failed) from the page's media line; the page appends
    ", K videos failed" when a file cannot load."""
    loaded = status.group(1) == status.group(2) and status.group(3) == status.group(4)
    return loaded, bool(status.group(5).strip(", "))


class DevTools:
    """A headless Chromium driven over ``--remote-debugging-pipe``: it reads commands on fd 3 and writes replies
    and events on fd 4, one JSON message per NUL-terminated record."""

    def __init__(self, flags: list[str]):
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()

        def wire_fds():  # in the child, before exec: the pipe ends become fds 3 and 4, inheritable
            a, b = os.dup(to_browser), os.dup(from_browser)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([browser(), "--headless", "--no-sandbox", "--remote-debugging-pipe", *flags,
                                      "about:blank"], preexec_fn=wire_fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id = b"", 0

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60.0):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                record, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(record)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"check_demo_page: Chromium did not answer {method} within {timeout:.0f} s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("check_demo_page: Chromium exited")
            self._buffer += chunk

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._out)
        os.close(self._in)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", nargs="?", default="outputs/demo/index.html")
    parser.add_argument("--screenshot", default=None, help="PNG to write (e.g. docs/demo_page.png)")
    parser.add_argument("--size", default="1280,1400", help="viewport size for the screenshot")
    parser.add_argument("--timeout-s", type=float, default=180.0, help="real seconds to wait for every file")
    args = parser.parse_args(argv)
    if not Path(args.page).is_file():
        raise SystemExit(f"check_demo_page: page: no such file {args.page} (run `make demo` first)")
    width, height = (int(v) for v in args.size.split(","))
    tools = DevTools(["--autoplay-policy=no-user-gesture-required"])
    try:
        target = tools.call("Target.createTarget", {"url": Path(args.page).resolve().as_uri()})["targetId"]
        session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tools.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": False}, session)
        start, last, found = time.monotonic(), None, None
        while time.monotonic() - start < args.timeout_s:
            text = tools.call("Runtime.evaluate", {
                "expression": "(document.getElementById('media-status') || {}).textContent || ''",
                "returnByValue": True}, session)["result"].get("value", "")
            found = STATUS.search(text)
            if found and found.group(0) != last:
                last = found.group(0)
                print(f"{time.monotonic() - start:5.1f} s: {last}")
            if found and any(_outcome(found)):
                break
            time.sleep(1.0)
        if not found:
            print("check_demo_page: the page did not report its media state", file=sys.stderr)
            return 1
        all_loaded, failed = _outcome(found)
        if not all_loaded and not failed:
            print(f"check_demo_page: not everything loaded within {args.timeout_s:.0f} s", file=sys.stderr)
        if args.screenshot:
            tools.call("Runtime.evaluate", {"expression": "window.scrollTo(0, 0)"}, session)
            png = tools.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(args.screenshot).write_bytes(base64.b64decode(png))
            print(f"screenshot: {args.screenshot}")
    finally:
        tools.close()
    return 0 if all_loaded and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
