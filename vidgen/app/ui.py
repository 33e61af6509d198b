"""The ``vidgen serve`` page: a Gradio ``Blocks`` app over a :class:`~vidgen.app.core.Studio`.

Gradio is imported here, inside the functions, and only by ``vidgen serve`` (the ``app`` extra:
``pip install -e .[app]``); the rest of vidgen never imports it.
"""
from __future__ import annotations

import sys
import traceback
import warnings
from pathlib import Path

from vidgen.app.core import DEFAULT_FRAMES_PER_PROMPT, MODES, Studio
from vidgen.errors import UnsupportedError, VidgenError

#: requests waiting behind the one being made; more are turned away until one finishes
QUEUE_SIZE = 16
INSTALL_HINT = "pip install -e .[app]"
VIDGEN = Path(__file__).resolve().parents[1]


def import_gradio():
    """``gradio``, or a vidgen error that says how to install it."""
    try:
        import gradio
    except ImportError as err:
        raise UnsupportedError(f"the web page needs Gradio, which is not installed ({err}); install the app extra: "
                               f"{INSTALL_HINT}") from err
    return gradio


def build_demo(studio: Studio):
    """The page: pipeline, prompt or story, settings, a Generate button, the video (plays in the page, downloads as
    MP4) and a line saying what was made. Its API endpoint is ``/generate``."""
    gr = import_gradio()
    lim, names = studio.limits, list(studio.pipelines)
    first = names[0]

    def on_generate(pipeline=first, mode="prompt", prompt=None, story=None, frames_per_prompt=None,
                    negative_prompt=None, seed=None, frames=None, height=None, width=None, steps=None, guidance=None,
                    progress=gr.Progress()):  # empty fields: the defaults (a random seed); API calls may omit them
        def report(fraction, text):
            progress(min(max(fraction, 0.0), 1.0), desc=text)

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = studio.generate(pipeline, mode, prompt, story, frames_per_prompt, negative_prompt, seed,
                                         frames, height, width, steps, guidance, progress=report)
        except VidgenError as err:  # bad input: a message on the page; the app stays up
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - any failure is a message on the page, with a traceback in the log
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"generation failed ({type(err).__name__}: {err})", print_exception=False) from None
        # vidgen's warnings go to the page (e.g. a prompt cut to the text encoder's tokens); others, such as those
        # of the server's own threads meanwhile, are not for the user
        for warning in caught:
            if Path(warning.filename).resolve().is_relative_to(VIDGEN):
                gr.Warning(str(warning.message))
        return str(result.path), result.describe(pipeline)

    def on_pipeline(name):
        return gr.update(visible=not studio.is_autoregressive(name)), studio.describe(name)

    def on_mode(mode):
        story = mode == "story"
        return (gr.update(visible=not story), gr.update(visible=story), gr.update(visible=story),
                gr.update(visible=not story))

    with gr.Blocks(title="vidgen", analytics_enabled=False) as demo:
        gr.Markdown("# vidgen: text to video\nPick a pipeline, type a prompt (or a story: prompts separated by `;`, "
                    "one every *frames per prompt* frames) and press **Generate**. One video is made at a time; "
                    "others wait in the queue.")
        with gr.Row():
            with gr.Column(scale=1):
                pipeline = gr.Dropdown(names, value=first, label="pipeline", elem_id="pipeline")
                about = gr.Markdown(studio.describe(first), elem_id="pipeline-info")
                mode = gr.Radio(list(MODES), value="prompt", label="mode", elem_id="mode")
                prompt = gr.Textbox(label="prompt", lines=2, elem_id="prompt",
                                    placeholder="a red circle moving right on a black background",
                                    info=f"at most {lim.max_prompt_chars} characters")
                story = gr.Textbox(label="story", lines=3, visible=False, elem_id="story",
                                   placeholder="a red circle moving right; a red circle moving up; a red circle",
                                   info=f"prompts separated by ';' (at most {lim.max_story_prompts})")
                frames_per_prompt = gr.Number(min(DEFAULT_FRAMES_PER_PROMPT, lim.max_frames), visible=False,
                                              label="frames per prompt", elem_id="frames-per-prompt")
                negative = gr.Textbox(label="negative prompt", placeholder="optional", elem_id="negative-prompt")
                with gr.Row():
                    seed = gr.Textbox(label="seed", placeholder="random", elem_id="seed",
                                      info="a whole number; empty: random")
                    frames = gr.Number(studio.default_frames, label="frames", elem_id="frames",
                                       info=f"at most {lim.max_frames}")
                with gr.Row():
                    height = gr.Number(studio.default_size, label="height", elem_id="height",
                                       info=f"at most {lim.max_size}")
                    width = gr.Number(studio.default_size, label="width", elem_id="width",
                                      info=f"at most {lim.max_size}")
                with gr.Row():
                    # text fields, as the seed: an empty gr.Number would send 0, and empty means the default here
                    steps = gr.Textbox(label="steps", placeholder="default", elem_id="steps",
                                       visible=not studio.is_autoregressive(first),
                                       info=f"empty: the pipeline's default; at most {lim.max_steps}")
                    guidance = gr.Textbox(label="guidance", placeholder="default", elem_id="guidance",
                                          info="empty: the pipeline's default")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                video = gr.Video(label="video", elem_id="video", interactive=False, autoplay=True, loop=True,
                                 height=420, buttons=["download"])
                video.GRADIO_CACHE = str(studio.workdir)  # served from the app's folder as written, never copied
                made = gr.Textbox(label="made", interactive=False, elem_id="made")

        button.click(on_generate, [pipeline, mode, prompt, story, frames_per_prompt, negative, seed, frames, height,
                                   width, steps, guidance], [video, made], api_name="generate")
        pipeline.change(on_pipeline, pipeline, [steps, about], api_visibility="private")
        mode.change(on_mode, mode, [prompt, story, frames_per_prompt, frames], api_visibility="private")
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return demo


class ServeApp:
    """The page and its studio: ``launch(...)`` serves it (on 127.0.0.1 unless told otherwise), ``close()`` stops it
    and removes the app's folder."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.demo = build_demo(studio)

    def launch(self, host: str = "127.0.0.1", port: int = 7860, block: bool = True, quiet: bool = False):
        """Serve the page (``block=False`` returns at once, for tests); the videos are served from the app's own
        folder only."""
        return self.demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet,
                                share=False, inbrowser=False, allowed_paths=[str(self.studio.workdir)],
                                show_error=False, ssr_mode=False)

    @property
    def url(self) -> str:
        return self.demo.local_url

    def close(self) -> None:
        try:
            self.demo.close(verbose=False)
        finally:
            self.studio.close()
