"""Fine-tuning a diffusers video model (a family of :mod:`vidgen.families`) with vidgen's trainer: full or LoRA
(peft), on a shard dataset encoded with the model's own VAE and text encoder::

    vidgen data encode clips/ --tokenizer Wan-folder/vae --text-encoder Wan-folder --max-text-tokens 512 --out shards
    python -m vidgen.training.finetune pipeline=Wan-folder data.root=shards lora.rank=16 steps=1000 run_dir=runs/lora

The loop is :mod:`vidgen.training.trainer`'s (exact resume after a kill, accelerate DDP; FSDP is untested here; bf16
autocast over fp32 master weights); the loss is the family's
(:func:`vidgen.adapters.sampling.training_loss`).
An image-to-video folder (``WanImageToVideoPipeline``) is fine-tuned on shards encoded with ``--first-frames``:
each clip's frame 0 is the image its condition is built from, as the folder's class builds it
(:mod:`vidgen.training.first_frame`).
``run_dir/final`` holds what diffusers reads: ``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights``) or,
for a full fine-tune, ``transformer/`` (``WanTransformer3DModel.from_pretrained``). Checkpoints hold only the
trained tensors. Caption embeddings are given to the transformer as the family's pipeline gives them
(:meth:`~vidgen.families.Family.caption_condition`: padded to its prompt length with zeros, and masked where the
transformer reads the mask; or taken as encoded, at a transformer's fixed text length).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vidgen.errors import ConfigError
from vidgen.families import PIPELINE_FAMILIES, folder_family
from vidgen.adapters.transformer import DiffusersVideoTransformer
from vidgen.tokenizers import DiffusersVideoVAE
from vidgen.training.config import GeneratorDataConfig, RunConfig, load_config
from vidgen.training.first_frame import FirstFrameCondition, model_inputs, needs_first_frames
from vidgen.training.generator_task import _LossModule
from vidgen.training.trainer import StepOutput, TrainingTask, run_training


@dataclass
class LoraSettings:
    rank: int = 0  # 0: a full fine-tune
    alpha: float = 0.0  # 0: the rank
    target_modules: list = field(default_factory=list)  # default: the family's (to_q, to_k, to_v, to_out.0)
    dropout: float = 0.0  # LoRA dropout


@dataclass
class FineTuneDataConfig(GeneratorDataConfig):
    dataset: str = "shards"  # shards only: a dataset written by `vidgen data encode`
    text_encoder: str = ""  # "": the pipeline folder (the captions must be encoded with --text-encoder FOLDER)


@dataclass
class FineTuneConfig(RunConfig):
    """A fine-tuning run of the diffusers pipeline folder ``pipeline``."""

    run_dir: str = "runs/finetune"
    pipeline: str = ""  # the diffusers pipeline folder to fine-tune
    lora: LoraSettings = field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False  # recompute the blocks' activations in the backward (less memory)
    data: FineTuneDataConfig = field(default_factory=FineTuneDataConfig)
    _filled = ("data.text_encoder",)  # left empty: the pipeline folder's, which the task fills in (training.resume)


class FineTuneModel(nn.Module):
    """The trained model as the loop sees it: ``loss`` is the family's; ``save_pretrained`` writes the trained
    tensors (checkpoints) or, once :meth:`export` is called, the folder diffusers reads."""

    def __init__(self, generator, lora: bool):
        super().__init__()
        self.generator, self.lora, self._export = generator, lora, False

    def loss(self, x, cond, generator=None):
        return self.generator.loss(x, cond, generator)

    def trained_state(self) -> dict:
        if self.lora:
            return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}
        return self.state_dict()

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        """Loads the tensors :meth:`trained_state` saves (a LoRA run: the adapter only; every key required)."""
        if not self.lora:
            return super().load_state_dict(state, strict=strict, assign=assign)
        params = dict(self.named_parameters())
        missing = sorted(set(self.trained_state()) - set(state))
        unknown = sorted(set(state) - set(params))
        if strict and (missing or unknown):
            raise ConfigError(f"checkpoint: adapter tensors missing {missing[:4]} or unknown {unknown[:4]}")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def export(self) -> None:
        self._export = True

    def save_pretrained(self, folder, safe_serialization: bool = True, **kwargs) -> None:
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not self._export:
            save_file({k: v.contiguous() for k, v in self.trained_state().items()},
                      str(folder / "diffusion_pytorch_model.safetensors"))
        elif self.lora:
            from vidgen.training.lora import save_lora
            save_lora(self.generator, folder)
        else:
            self.generator.model.save_pretrained(folder / "transformer", safe_serialization=True)


def family_condition(cond, generator, max_text_tokens: int):
    """Shard caption embeddings as the family's pipeline gives them to the transformer (module docstring)."""
    from vidgen.generators import Conditioning
    if cond is None:
        raise ConfigError("the shards hold no captions: fine-tuning a text-to-video model needs text "
                          "(vidgen data encode --text-encoder PIPELINE_FOLDER)")
    return Conditioning(*generator.family.caption_condition(cond.text, cond.text_mask, max_text_tokens))


def _load_native(folder):
    """The diffusers pipeline in ``folder`` (fp32: the master weights), as the class its ``model_index.json`` names
    (the family's text-to-video class or one of its conditioned classes), if it is a supported video family."""
    import json

    import diffusers
    family = folder_family(folder)
    if family is None:
        names = sorted(n for f in PIPELINE_FAMILIES for n in (f.pipeline, *f.conditioned))
        raise ConfigError(f"pipeline={folder}: not a supported diffusers video pipeline folder (its model_index.json "
                          f"must name one of {names})")
    family.refuse("fine-tuning")
    name = json.loads((Path(folder) / "model_index.json").read_text())["_class_name"]
    return getattr(diffusers, name).from_pretrained(str(folder), dtype=torch.float32)


class FineTuneTask(TrainingTask):
    """The family's loss on shard batches, for the LoRA adapter or every weight of the transformer."""

    rate_key, rate_label, rate_format = "tokens_per_s", "tok_s", "{:.0f}"
    description = "fine-tuning"

    def __init__(self, cfg: FineTuneConfig, acc, log):
        from vidgen.data.shards import tokenizer_fingerprint
        from vidgen.training.lora import add_lora
        from vidgen.training.shards import shard_batches
        if not cfg.pipeline:
            raise ConfigError(f"pipeline: set pipeline=FOLDER, a diffusers "
                              f"{' / '.join(f.pipeline for f in PIPELINE_FAMILIES)} folder")
        if cfg.data.dataset != "shards":
            raise ConfigError(f"data.dataset={cfg.data.dataset!r}: fine-tuning reads a shard dataset (vidgen data "
                              "encode with the pipeline's VAE and text encoder)")
        self.cfg, self.acc = cfg, acc
        pipe = _load_native(cfg.pipeline)
        gen = DiffusersVideoTransformer(pipe.transformer, noise_scheduler=pipe.scheduler)
        vae = DiffusersVideoVAE(pipe.vae)
        gen.configure(pipe.config, vae)  # the family's call options fixed by the pipeline
        pipe.transformer.to(acc.device).train()
        if cfg.gradient_checkpointing:
            pipe.transformer.enable_gradient_checkpointing()
        if cfg.lora.rank:
            params = add_lora(gen, cfg.lora.rank, cfg.lora.alpha or None, cfg.lora.target_modules or None,
                              cfg.lora.dropout, seed=cfg.seed)
        else:
            params = [p for p in pipe.transformer.parameters() if p.requires_grad]
        self.max_text_tokens = gen.max_text_tokens
        data = cfg.data
        if not data.text_encoder:
            data.text_encoder = cfg.pipeline
        # an image-to-video folder: each clip's first frame, as its class builds the condition (first_frame.py)
        self.first_frame = FirstFrameCondition(pipe, gen.family, vae, acc.device) \
            if needs_first_frames(gen.family, pipe) else None
        self.conditioned = [gen]  # the models whose calls take a step's first-frame condition
        self.shards = shard_batches(data, tokenizer_fingerprint(vae), False, cfg.seed,
                                    acc.process_index, acc.num_processes, log, first_frames=bool(self.first_frame))
        for shape in self.shards.dataset.shapes.values():
            gen.check_grid(tuple(shape[-3:]))
        if self.first_frame is not None:
            self.first_frame.check_shards(self.shards.dataset, data.root)
        self.pipe, self.generator = pipe, gen
        self.model = FineTuneModel(gen, lora=bool(cfg.lora.rank))
        self.module, self.params, self.num_items = _LossModule(self.model), params, len(self.shards)
        log(f"{type(pipe.transformer).__name__}: {sum(p.numel() for p in params) / 1e6:.3f} M of "
            f"{sum(p.numel() for p in pipe.transformer.parameters()) / 1e6:.2f} M parameters trained "
            f"({'LoRA rank ' + str(cfg.lora.rank) if cfg.lora.rank else 'full'}), {self.num_items} clips")

    def make_sampler(self, seed: int, rank: int, world: int):
        return self.shards

    def step(self, module, sampler, step, g) -> StepOutput:
        bucket, x, cond, *first = sampler.take_batch()
        cond = family_condition(cond, self.generator, self.max_text_tokens).to(self.acc.device)
        inputs = self.first_frame(first[0], bucket, tuple(x.shape[1:])) if self.first_frame is not None else {}
        with model_inputs(self.conditioned, inputs), self.acc.autocast():
            loss, logs = module(x.to(self.acc.device, torch.float32), cond, g)
        return StepOutput(loss, logs, units=x.shape[0] * int(torch.tensor(x.shape[-3:]).prod()),
                          tail_logs={"bucket": bucket})

    def finish(self, final) -> dict:
        final.export()
        return {"pipeline": self.cfg.pipeline, "lora_rank": self.cfg.lora.rank}


def finetune(cfg: FineTuneConfig) -> dict:
    """Run the fine-tune; ``run_dir/final`` holds the LoRA or the transformer folder (module docstring)."""
    return run_training(cfg, lambda acc, log, sp: FineTuneTask(cfg, acc, log))


def main(argv=None) -> int:
    """``python -m vidgen.training.finetune [--config FILE] key=value ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    path = argv[argv.index("--config") + 1] if "--config" in argv else None
    overrides = [a for i, a in enumerate(argv) if a != "--config" and (i == 0 or argv[i - 1] != "--config")]
    finetune(load_config(path, overrides, schema=FineTuneConfig))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
