#!/usr/bin/env python
"""Drive a running ``vidgen serve`` page in headless Chromium: type a prompt, press Generate, wait until the page's
<video> has a playable source (its metadata loaded), optionally take a screenshot. Used by tests/integration/test_app.py and to
make docs/app.png:

    vidgen serve --port 7860 &
    python tests/helpers/app_browser.py http://127.0.0.1:7860 --prompt "a red circle moving right on a black background" \\
        --screenshot docs/app.png --state docs/results/app_screenshot.json --size 1280,1060

``--state`` writes what the page showed beside the screenshot (the pipeline's description with its default sampling
settings, what was made) and the screenshot's SHA-256, so a test can tell a screenshot of other settings.

Chromium is driven over its DevTools pipe with eval/check_demo_page.py's ``DevTools`` (no websocket library).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")

#: the page's state, read in the page: is the form there, what the <video> holds, any error toast
STATE_JS = """(() => {
  const v = document.querySelector('#video video');
  const toasts = [...document.querySelectorAll('.toast-body, [data-testid="toast-body"]')].map(t => t.innerText);
  return JSON.stringify({
    form: !!document.querySelector('#prompt textarea') && !!document.querySelector('#generate'),
    src: v ? (v.currentSrc || v.src || '') : '',
    ready: v ? v.readyState : -1,
    duration: v && isFinite(v.duration) ? v.duration : 0,
    error: v && v.error ? v.error.code : 0,
    made: (document.querySelector('#made textarea, #made input') || {}).value || '',
    about: (document.querySelector('#pipeline-info') || {}).innerText || '',
    toasts: toasts,
  });
})()"""


def find_browser() -> str | None:
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


def _devtools_class():
    spec = importlib.util.spec_from_file_location("_vidgen_check_demo_page", ROOT / "eval" / "check_demo_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DevTools


def _type_and_click(prompt: str) -> str:
    return f"""(() => {{
      const box = document.querySelector('#prompt textarea');
      box.value = {json.dumps(prompt)};
      box.dispatchEvent(new Event('input', {{bubbles: true}}));
      box.dispatchEvent(new Event('change', {{bubbles: true}}));
      setTimeout(() => {{
        const b = document.querySelector('#generate');
        (b.tagName === 'BUTTON' ? b : b.querySelector('button')).click();
      }}, 300);
      return true;
    }})()"""


def generate_in_browser(url: str, prompt: str, screenshot: str | None = None, timeout_s: float = 120.0,
                        size=(1280, 900), log=print) -> dict:
    """Open ``url``, type ``prompt``, press Generate; returns the page's final state (``src``, ``ready``,
    ``duration``, ``made``, ``toasts``) once the video's metadata has loaded, an error toast appeared or
    ``timeout_s`` passed."""
    tools = _devtools_class()(["--autoplay-policy=no-user-gesture-required", "--mute-audio"])
    start = time.monotonic()
    state: dict = {}
    try:
        target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tools.call("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1], "deviceScaleFactor": 1,
                                                          "mobile": False}, session)
        tools.call("Page.navigate", {"url": url}, session)

        def read() -> dict:
            value = tools.call("Runtime.evaluate", {"expression": STATE_JS, "returnByValue": True},
                               session)["result"].get("value")
            return json.loads(value) if value else {}

        clicked = False
        while time.monotonic() - start < timeout_s:
            state = read()
            if not clicked and state.get("form"):
                tools.call("Runtime.evaluate", {"expression": _type_and_click(prompt), "returnByValue": True}, session)
                clicked = True
                log(f"{time.monotonic() - start:5.1f} s: page loaded, prompt typed, Generate pressed")
            elif clicked and (state.get("ready", -1) >= 1 and state.get("duration", 0) > 0 or state.get("toasts")
                              or state.get("error")):
                break
            time.sleep(0.5)
        state["seconds"] = round(time.monotonic() - start, 1)
        log(f"{state['seconds']:5.1f} s: {state}")
        if screenshot:
            time.sleep(1.0)  # let the first frame paint
            png = tools.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(png))
            log(f"screenshot: {screenshot}")
    finally:
        tools.close()
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:7860")
    parser.add_argument("--prompt", default="a red circle moving right on a black background")
    parser.add_argument("--screenshot", default=None, help="PNG to write (e.g. docs/app.png)")
    parser.add_argument("--size", default="1280,900", help="viewport size")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--state", default=None, help="JSON to write the page's final state to, with the screenshot's "
                                                       "SHA-256 (e.g. docs/results/app_screenshot.json)")
    args = parser.parse_args(argv)
    if find_browser() is None:
        print("app_browser: no Chromium / Chrome found (apt-get install -y chromium)", file=sys.stderr)
        return 1
    width, height = (int(v) for v in args.size.split(","))
    state = generate_in_browser(args.url, args.prompt, args.screenshot, args.timeout_s, (width, height))
    ok = state.get("ready", -1) >= 1 and not state.get("toasts")
    if args.state and ok:
        record = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "prompt": args.prompt, "size": [width, height],
                  "state": state}
        if args.screenshot:
            record.update(screenshot=args.screenshot,
                          screenshot_sha256=hashlib.sha256(Path(args.screenshot).read_bytes()).hexdigest())
        Path(args.state).write_text(json.dumps(record, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
