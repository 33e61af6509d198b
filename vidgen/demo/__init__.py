"""``make demo``: text-to-video with the shipped pipelines, scored for prompt adherence (see :mod:`vidgen.demo.run`)."""
from vidgen.demo.prompts import DemoPrompt, demo_prompts, prompt_groups, real_clip
from vidgen.demo.run import PIPELINES, main

__all__ = ["PIPELINES", "DemoPrompt", "demo_prompts", "main", "prompt_groups", "real_clip"]
