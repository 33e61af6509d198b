#!/usr/bin/env python
"""Distil a flow pipeline into a few-step student with its guidance built in (vidgen.distillation.task).

    python pipelines/distill.py distill.teacher=pretrained/shapes-flow distill.method=dmd2 steps=2000
    python pipelines/distill.py --config configs/shapes-flow-distilled/stage1.yaml
    python pipelines/distill.py distill.teacher=Wan-folder data.root=shards lora.rank=32 distill.shift=5
    python pipelines/distill.py --config experiments/configs/distill/self_forcing_shapes.yaml  # Self-Forcing, not shipped
    accelerate launch --multi_gpu --num_processes 2 pipelines/distill.py --config ... run_dir=runs/x

The data settings are the generator trainer's (the clips give the conditioning; consistency distillation also noises
their latents). Resumes from ``run_dir/checkpoints/latest`` automatically (a new run takes an empty ``run_dir``).
Writes ``run_dir/log.jsonl``, the student to ``run_dir/final`` and, when the teacher is a pipeline folder, the teacher's
pipeline with the student in it to ``run_dir/pipeline`` (sampling at the student's largest step count, guidance 1).
A diffusers teacher (a Wan / CogVideoX / LTX ... folder) trains a LoRA on the fine-tuner's shards instead
(vidgen.distillation.diffusers_task): ``run_dir/final`` then holds it in diffusers' format, with the student's
scheduler.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON distillation config")
    parser.add_argument("overrides", nargs="*", help="config overrides like steps=100 distill.method=consistency")
    parser.add_argument("--assemble", nargs=3, metavar=("TEACHER", "STUDENT", "OUT"),
                        help="only write the teacher pipeline with a trained student (a run's final/ or one of its "
                             "checkpoints/step_N) to OUT, and exit")
    parser.add_argument("--ema", action="store_true", help="with --assemble from a checkpoint: its EMA weights (what "
                        "final/ would hold had the run ended there), not the raw ones")
    args = parser.parse_args(argv)
    from vidgen.cli import quiet_import_notices
    quiet_import_notices()  # the pinned packages' import-time notices, as the vidgen command drops them
    from vidgen.errors import VidgenError
    from vidgen.training import load_config
    from vidgen.distillation.task import DistillTrainConfig, distill
    try:
        if args.assemble:
            return assemble(*args.assemble, ema=args.ema)
        if _diffusers_teacher(args.config, args.overrides):
            from vidgen.distillation.diffusers_task import DiffusersDistillConfig, distill_diffusers
            print(distill_diffusers(load_config(args.config, args.overrides, schema=DiffusersDistillConfig)))
            return 0
        cfg = load_config(args.config, args.overrides, schema=DistillTrainConfig)
        metrics = distill(cfg)
        if (Path(cfg.distill.teacher) / "model_index.json").is_file() and os.environ.get("RANK", "0") == "0":
            assemble(cfg.distill.teacher, Path(cfg.run_dir) / "final", Path(cfg.run_dir) / "pipeline")
    except VidgenError as err:
        print(f"distill: error: {err}", file=sys.stderr)
        return 2
    print(metrics)
    return 0


def _diffusers_teacher(config, overrides) -> bool:
    """Whether ``distill.teacher`` (from the overrides, else the config file) is a diffusers family's folder."""
    import yaml
    from vidgen.families import folder_family
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("distill.teacher=")]
    if given:
        teacher = given[-1]
    elif config and Path(config).is_file():
        try:
            tree = yaml.safe_load(Path(config).read_text())
        except yaml.YAMLError:
            return False  # load_config names the file and the error
        section = tree.get("distill") if isinstance(tree, dict) else None
        teacher = section.get("teacher", "") if isinstance(section, dict) else ""
    else:
        return False  # no file: load_config names it
    return bool(teacher) and folder_family(teacher) is not None


def assemble(teacher: str, student: str, out: str, ema: bool = False) -> int:
    """The teacher's pipeline folder with ``student`` as its transformer (``vidgen.pipelines.loading.with_student``);
    from a checkpoint, its EMA weights when ``ema``."""
    from vidgen.pipelines import load_pipeline
    from vidgen.pipelines.loading import student_class, with_student
    from vidgen.training.checkpoint import load_trained
    trained = load_trained(student_class(student), student, ema=ema)
    with_student(load_pipeline(teacher, dtype="fp32"), trained).save_pretrained(out)
    print(f"pipeline: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
