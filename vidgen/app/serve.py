"""``vidgen serve``: a local web page (Gradio) for the text-to-video pipelines.

    pip install -e .[app]
    vidgen serve                                   # every shipped pipeline from pretrained/
    vidgen serve --pipeline flow my/folder --port 7861 --max-frames 64

Every pipeline is loaded once, before serving (a folder that fails to load stops the command with an error). The page
listens on 127.0.0.1 only unless ``--host`` says otherwise, makes one video at a time (others wait in a queue),
refuses frames, sizes, steps and prompts above the limits, and writes its MP4s only into its own temporary folder,
which is removed when the server stops.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from vidgen.errors import ConfigError, InvalidInputError, MissingWeightsError, VidgenError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _shipped_names() -> list[str]:
    from vidgen.pipelines.registry import PIPELINE_REGISTRY
    return list(PIPELINE_REGISTRY)


def load_pipelines(pipelines: list[str] | None, pretrained: str = "pretrained") -> dict:
    """``--pipeline`` values (shipped names or ``save_pretrained`` folders; default: every shipped pipeline under
    ``pretrained``) -> {page name: loaded pipeline}. Any folder that is missing, fails to load or is not
    text-conditioned is a vidgen error."""
    from vidgen.cli.generate import _load, pipeline_folder

    loaded = {}
    for given in pipelines or _shipped_names():
        folder = pipeline_folder(SimpleNamespace(pipeline=given, pretrained=pretrained))
        if not Path(folder).is_dir():
            raise MissingWeightsError(f"--pipeline {given}: no such folder {folder} (expected a save_pretrained "
                                      f"folder, or a shipped name under --pretrained: {', '.join(_shipped_names())})")
        name = given if given in _shipped_names() else Path(folder).resolve().name
        if name in loaded:
            raise ConfigError(f"--pipeline {given}: a pipeline named {name!r} is already served")
        pipe = _load(folder)
        if pipe.transformer is None or not pipe.transformer.backbone_config.text_dim:
            raise ConfigError(f"--pipeline {given}: {folder} is not a text-to-video pipeline (the page takes prompts)")
        pipe.set_progress_bar_config(disable=True)
        pipe.encode_prompt("a test prompt")  # loads the text encoder now, not at the first request
        loaded[name] = pipe
    return loaded


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken before the (slow) loading rather than after it."""
    import socket

    if port == 0:  # any free port
        return
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server sets it
            probe.bind((host, port))
    except OSError as err:
        raise ConfigError(f"cannot serve on {host}:{port} ({err.strerror or err}); pick another --port or --host") \
            from err


def _exit_on_sigterm() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run(args) -> int:
    import torch

    from vidgen.app.core import Limits, Studio
    from vidgen.app.ui import ServeApp, import_gradio

    app = None
    try:
        if args.threads is not None and args.threads < 1:
            raise InvalidInputError(f"--threads must be >= 1, got {args.threads}")
        if not 0 <= args.port < 65536:
            raise InvalidInputError(f"--port must be in [0, 65535], got {args.port}")
        limits = Limits(max_frames=args.max_frames, max_size=args.max_size, max_steps=args.max_steps,
                        max_prompt_chars=args.max_prompt_chars)
        import_gradio()  # before the (slow) loading: a missing extra or a taken port is said at once
        check_port(args.host, args.port)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        pipelines = load_pipelines(args.pipeline, args.pretrained)
        print(f"loaded {', '.join(pipelines)}")
        app = ServeApp(Studio(pipelines, limits, threads=args.threads))
        if args.host not in LOOPBACK:
            print(f"warning: --host {args.host}: the page is reachable from other machines, without a password",
                  file=sys.stderr)
        print(f"videos are written to {app.studio.workdir} (removed when the server stops); press Ctrl+C to stop")
        _exit_on_sigterm()  # `kill` ends the server through the `finally` below, which removes the app's folder
        try:
            app.launch(args.host, args.port, block=True)
        except OSError as err:  # e.g. the port is taken
            raise ConfigError(f"cannot serve on {args.host}:{args.port} ({err})") from err
        return 0
    except VidgenError as err:
        print(f"vidgen serve: error: {err}", file=sys.stderr)
        return 2
    finally:
        if app is not None:
            app.close()


def register(subparsers) -> None:
    from vidgen.cli.generate import RegistryHelp
    parser = subparsers.add_parser("serve", help="a local web page for the text-to-video pipelines (needs .[app])",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", nargs="+", action="extend", default=None, metavar="PATH_OR_NAME",
                        help=RegistryHelp("shipped pipelines ({names}) or save_pretrained folders "
                                          "(default: every shipped one)"))
    parser.add_argument("--pretrained", default="pretrained",
                        help="folder holding the shipped pipelines' folders (for --pipeline NAME)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-frames", type=int, default=256, metavar="N",
                        help="most frames one video or story may have (default 256)")
    parser.add_argument("--max-size", type=int, default=128, metavar="N", help="largest height and width (default 128)")
    parser.add_argument("--max-steps", type=int, default=100, metavar="N", help="most sampling steps (default 100)")
    parser.add_argument("--max-prompt-chars", type=int, default=300, metavar="N",
                        help="longest prompt, in characters (default 300)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all)")
    parser.set_defaults(func=run)
