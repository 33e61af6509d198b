"""``vidgen eval recon``: reconstruction benchmark of one trained tokenizer (VAE or discrete).

On held-out NaturalClips (or a user's video folder): PSNR, SSIM, temporal flicker, perceptual distance (LPIPS when
its ImageNet backbone is cached, else ST-LPIPS, reported under its own name), rFVD (I3D; ``--fvd``), encode and
decode frames/s, peak RSS; chunked-vs-one-shot max difference; tiled-vs-untiled PSNR on larger frames
(``--tiling-size``). Writes ``results.json`` and one PNG per clip (original | reconstruction | |error|).

``--protocol`` applies a named preset of the settings published tokenizer tables share (:data:`RECON_PROTOCOLS`);
the results record it. rFVD from fewer clips than :func:`vidgen.metrics.frechet.reliability` asks for is stored
with ``"reliable": false``. ``--skip-bad`` skips clips of a ``--data`` folder that cannot be read at the protocol's
length and lists each, with the reason, under ``skipped``.

    vidgen eval recon runs/vae_small/final --clips 32 --frames 17 --size 64 --out outputs/recon_vae_small
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch

from vidgen.errors import ConfigError, InvalidInputError, MissingWeightsError, VideoIOError
from vidgen.metrics.baselines import ResizeBaseline

#: the settings when neither the command line nor a protocol sets them
DEFAULTS = {"frames": 17, "size": 64, "perceptual": "auto", "perceptual_net": "alex", "fvd": False}

#: ``--protocol`` presets: the settings under which published video tokenizer tables are read
RECON_PROTOCOLS = {
    "published-17x256": {
        "frames": 17, "size": 256, "perceptual": "lpips", "perceptual_net": "alex", "fvd": True,
        "metrics": ["PSNR", "SSIM", "LPIPS-alex", "rFVD"],
        "description": "17-frame clips at 256x256, as most published video tokenizer tables report: PSNR and SSIM "
                       "per clip, LPIPS v0.1 with the AlexNet backbone (the lpips package's default network) per "
                       "frame, rFVD with the Kinetics-400 I3D (vidgen.metrics.fvd)",
    },
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_eval_set(data: str, clips: int, frames: int, size: int, seed: int = 0,
                  skipped: list | None = None) -> tuple[torch.Tensor, list[str]]:
    """Held-out clips ``(N, 3, T, H, W)`` and the source of each (photograph name, or video file). A clip of a video
    folder that cannot be read at ``frames`` frames (too short, corrupt) raises, unless ``skipped`` is a list: then
    ``{"clip": path, "reason": message}`` is appended to it and the next video is read instead."""
    from vidgen.data import NaturalClips, SceneClips, VideoFolder
    if data == "natural":
        dataset = NaturalClips("test", num_frames=frames, size=size, num_clips=clips, seed=seed)
    elif data in ("scenes", "scenes-val"):  # layered scenes over the held-out photographs, or over the val ones
        # (for choosing between models, never for reporting)
        split = "val" if data == "scenes-val" else "test"
        dataset = SceneClips(split, num_frames=frames, size=size, num_clips=clips, seed=seed)
    else:
        dataset = VideoFolder(data, num_frames=frames, size=size)
    items = []
    for i in range(len(dataset)):
        if len(items) == clips:
            break
        try:
            items.append(dataset[i])
        except VideoIOError as err:
            if skipped is None:
                raise VideoIOError(f"--data {data}: {err}; pass --skip-bad to skip such clips (each is listed, with "
                                   "the reason, under 'skipped' in results.json)") from err
            skipped.append({"clip": str(dataset.paths[i]) if hasattr(dataset, "paths") else f"clip {i}",
                            "reason": str(err)})
    if not items:
        reason = f" ({len(skipped)} skipped, e.g. {skipped[0]['reason']})" if skipped else ""
        raise InvalidInputError(f"--data {data}: no usable clips of {frames} frames{reason}")
    sources = [str(it.get("source") or Path(str(it.get("path", f"clip {i}"))).name) for i, it in enumerate(items)]
    return torch.stack([it["video"] for it in items]), sources


def load_eval_clips(data: str, clips: int, frames: int, size: int, seed: int = 0,
                    skipped: list | None = None) -> torch.Tensor:
    return load_eval_set(data, clips, frames, size, seed, skipped)[0]


def per_source(values: torch.Tensor, sources: list[str]) -> dict[str, float]:
    """Mean of per-clip ``values`` for each source: the held-out set is only 4 photographs, so the spread between
    them says more than the mean alone."""
    groups: dict[str, list[float]] = {}
    for value, source in zip(values.tolist(), sources):
        groups.setdefault(source, []).append(value)
    return {source: sum(v) / len(v) for source, v in sorted(groups.items())}


def reconstruct(model, clips: torch.Tensor, batch: int, chunk_frames: int | None,
                usage=None) -> tuple[torch.Tensor, float, float]:
    """Reconstructions (clamped to [-1, 1]) and total encode / decode seconds; a discrete tokenizer's codes are
    counted into ``usage`` (a ``CodebookUsage``) when given, so no second tokenization pass is needed."""
    return _reconstruct(model, clips, batch, chunk_frames, usage)[:3]


@torch.no_grad()  # without it every batch's autograd graph stayed alive: 22 GB on 32 clips at 128x128
def _reconstruct(model, clips: torch.Tensor, batch: int, chunk_frames: int | None, usage=None):
    """reconstruct() plus the number of values the codes hold (ids count one each); a discrete tokenizer's codes are
    also counted into ``usage`` (a ``CodebookUsage``) when given."""
    t, h, w = clips.shape[2:]
    outs, enc_s, dec_s, values = [], 0.0, 0.0, 0
    for i in range(0, len(clips), batch):
        x = clips[i:i + batch].to(model.dtype)  # the model's compute dtype (bf16 with --precision bf16)
        t0 = time.perf_counter()
        if hasattr(model, "tokenize"):
            codes = model.tokenize(x, chunk_frames=chunk_frames)
            t1 = time.perf_counter()
            y = model.detokenize(codes, num_frames=t, height=h, width=w, chunk_frames=chunk_frames)
            values += codes.numel()
        elif isinstance(model, ResizeBaseline):
            codes = model.encode(x)
            t1 = time.perf_counter()
            y = model.decode(codes, num_frames=t, height=h, width=w)
            values += codes.numel()
        else:
            z = model.encode(x, chunk_frames=chunk_frames).latent_dist.mode()
            t1 = time.perf_counter()
            y = model.decode(z, num_frames=t, height=h, width=w, chunk_frames=chunk_frames).sample
            values += z.numel()
        dec_s += time.perf_counter() - t1
        enc_s += t1 - t0
        if usage is not None:  # outside the timed calls
            usage.update(codes)
        outs.append(y.float().clamp(-1, 1))  # metrics (PSNR, SSIM, FVD features) are computed in fp32
    return torch.cat(outs), enc_s, dec_s, values


def _frame_metric(metric, x: torch.Tensor, y: torch.Tensor, batch: int = 32) -> float:
    fx, fy = x.transpose(1, 2).flatten(0, 1), y.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
    return torch.cat([metric(fx[i:i + batch], fy[i:i + batch]) for i in range(0, len(fx), batch)]).mean().item()


def tiling_check(model, data: str, size: int, frames: int, tile: int, overlap: int, clips: int = 2,
                 skip_bad: bool = False) -> dict:
    """PSNR of tiled vs untiled reconstruction on ``size``-pixel frames (and each vs the original)."""
    from vidgen.metrics.reconstruction import psnr
    x = load_eval_clips(data, clips, frames, size, skipped=[] if skip_bad else None)
    model.disable_tiling()
    full, _, _ = reconstruct(model, x, 1, None)
    model.enable_tiling(tile_sample_size=tile, tile_overlap=overlap)
    try:
        tiled, _, _ = reconstruct(model, x, 1, None)
    finally:
        model.disable_tiling()
    return {"size": size, "tile": tile, "overlap": overlap, "psnr_tiled_vs_untiled": psnr(full, tiled).mean().item(),
            "psnr_untiled_vs_original": psnr(x, full).mean().item(), "psnr_tiled_vs_original": psnr(x, tiled).mean().item()}


def settle_protocol(args) -> dict | None:
    """Fill ``args``' unset settings from ``args.protocol``'s preset (then :data:`DEFAULTS`); returns the preset's
    record for the results (None without a protocol). A setting given on the command line that contradicts the
    preset is a ConfigError."""
    name = getattr(args, "protocol", None)
    if name and name not in RECON_PROTOCOLS:
        raise ConfigError(f"--protocol {name!r} is unknown; choose from {sorted(RECON_PROTOCOLS)}")
    preset = RECON_PROTOCOLS.get(name) or {}
    for key, default in DEFAULTS.items():
        given = getattr(args, key, None)
        if key in preset and given is not None and given != preset[key]:
            raise ConfigError(f"--{key.replace('_', '-')} {given} contradicts --protocol {name} ({key} {preset[key]}); "
                              "drop the option to evaluate under the protocol, or drop --protocol")
        if given is None:
            setattr(args, key, preset.get(key, default))
    return {"name": name, **preset} if name else None


def run(args) -> dict:
    """The command: ``args.threads`` threads while it runs, torch's thread count restored afterwards."""
    protocol = settle_protocol(args)  # a protocol sets --clips and --fvd: checked after it
    if args.fvd and args.clips < 2:  # before any clip is encoded
        raise InvalidInputError(f"--fvd needs at least 2 clips (a covariance), got --clips {args.clips}")
    if args.png_clips < 0:
        raise InvalidInputError(f"--png-clips must be >= 0, got {args.png_clips}")
    if protocol:  # the protocol's perceptual metric, or a named error before any clip is read
        from vidgen.metrics.perceptual import _torch_hub_checkpoint, load_perceptual
        try:
            args.perceptual_metric = load_perceptual(args.perceptual, net=args.perceptual_net)
        except MissingWeightsError as err:
            trunk = _torch_hub_checkpoint(args.perceptual_net)
            raise MissingWeightsError(
                f"--protocol {protocol['name']} reports LPIPS-{args.perceptual_net}, which needs torchvision's ImageNet "
                f"weights at {trunk}" + (f" ({err})" if trunk.exists() else " (missing)") + "; copy the file there "
                "from a machine with internet (it is never downloaded), or evaluate without --protocol") from err
    args.protocol_record = protocol
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> dict:
    from vidgen.io import contact_sheet, make_folder, save_image
    from vidgen.metrics.reconstruction import psnr, ssim, temporal_flicker
    from vidgen.precision import resolve_dtype
    from vidgen.tokenizers.loading import is_discrete, load_tokenizer
    from vidgen.tokenizers.quantizers import CodebookUsage

    out = make_folder(args.out, "--out")
    dtype = resolve_dtype(args.precision, "cpu", "--precision")
    is_baseline = str(args.model).startswith("bicubic")
    model = ResizeBaseline.from_name(args.model) if is_baseline else load_tokenizer(args.model)
    if any(p.dtype != dtype for p in model.parameters()):  # a cast only when one is needed (diffusers warns on each)
        model = model.to(dtype)
    skipped = [] if getattr(args, "skip_bad", False) else None
    clips, sources = load_eval_set(args.data, args.clips, args.frames, args.size, args.seed, skipped)
    rss_before = _peak_rss_mb()
    usage = CodebookUsage(model.vocab_size) if not is_baseline and is_discrete(model) else None
    recon, enc_s, dec_s, values = _reconstruct(model, clips, args.batch, args.chunk_frames, usage)
    n_frames = clips.shape[0] * clips.shape[2]
    per_clip_psnr = psnr(clips, recon)
    result = {"model": str(args.model), "class": type(model).__name__, "protocol": args.protocol_record,
              "data": args.data, "clips": len(clips), "skipped": skipped or [], "not_measured": {},
              "frames": args.frames, "size": args.size, "threads": args.threads, "chunk_frames": args.chunk_frames,
              "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
              "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
              "compression": clips.numel() / values,  # input values per stored value (ids count one each)
              "psnr": per_clip_psnr.mean().item(), "psnr_per_source": per_source(per_clip_psnr, sources),
              "ssim": ssim(clips, recon).mean().item(),
              "flicker": temporal_flicker(clips, recon).mean().item(),
              "encode_frames_per_s": n_frames / enc_s, "decode_frames_per_s": n_frames / dec_s,
              "peak_rss_mb": _peak_rss_mb(), "peak_rss_mb_before_reconstruction": rss_before}
    if usage is not None:  # over every evaluated token (all depths of a residual quantizer)
        result.update(utilization=usage.utilization, perplexity=usage.perplexity, tokens_counted=usage.total)
    try:
        from vidgen.metrics.perceptual import load_perceptual
        perceptual = getattr(args, "perceptual_metric", None) or load_perceptual(args.perceptual, args.perceptual_net)
        result[perceptual.name] = _frame_metric(perceptual, clips, recon)
        result["perceptual_metric"] = perceptual.name  # the variant and its backbone, e.g. LPIPS-alex
    except Exception as err:  # noqa: BLE001 - missing weights must not hide the other numbers
        result["perceptual_metric"], result["not_measured"]["perceptual"] = None, f"unavailable: {err}"
    if args.fvd:
        from vidgen.metrics.frechet import reliability
        from vidgen.metrics.fvd import FrechetVideoDistance, fvd
        result["rfvd"] = fvd(clips, recon)
        result["rfvd_reliability"] = reliability(len(clips), len(recon), FrechetVideoDistance.dim)
    else:
        result["rfvd"], result["not_measured"]["rfvd"] = None, "pass --fvd"
    chunked, _, _ = reconstruct(model, clips[:2], 2, 1)
    oneshot, _, _ = reconstruct(model, clips[:2], 2, None)
    result["max_abs_diff_chunked_vs_one_shot"] = (chunked - oneshot).abs().max().item()
    if args.tiling_size and hasattr(model, "enable_tiling"):
        result["tiling"] = tiling_check(model, args.data, args.tiling_size, min(args.frames, 9), args.tile,
                                        args.tile_overlap, skip_bad=skipped is not None)
    for i in range(min(len(clips), args.png_clips)):
        err = (recon[i] - clips[i]).abs() * 2 - 1
        sheet = contact_sheet([clips[i], recon[i], err], labels=["original", "reconstruction", "|error|"], scale=2)
        save_image(out / f"clip_{i:03d}_psnr{per_clip_psnr[i]:.1f}.png", sheet)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def add_arguments(parser) -> None:
    parser.add_argument("model", help="save_pretrained folder of a tokenizer, or 'bicubic' / 'bicubic-SxT' for the "
                                      "resize baseline (default 4x spatial, every other frame)")
    parser.add_argument("--data", default="natural",
                        help="'natural' (held-out NaturalClips), 'scenes' (held-out SceneClips), 'scenes-val' "
                        "(SceneClips over the val photographs: to choose between models without the held-out ones) "
                        "or a video folder")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--protocol", default=None, choices=sorted(RECON_PROTOCOLS),
                        help="a preset of the settings published tokenizer tables share (published-17x256: 17 frames "
                             "at 256x256, PSNR / SSIM / LPIPS-alex, I3D rFVD); recorded in the results")
    parser.add_argument("--frames", type=int, default=None, help=f"frames per clip (default {DEFAULTS['frames']})")
    parser.add_argument("--size", type=int, default=None, help=f"frame size (default {DEFAULTS['size']})")
    parser.add_argument("--perceptual", default=None, choices=("auto", "lpips", "stlpips"),
                        help="perceptual distance (default auto: LPIPS when its ImageNet backbone is cached, else "
                             "ST-LPIPS); reported under its name with the backbone, e.g. LPIPS-alex")
    parser.add_argument("--perceptual-net", default=None, choices=("alex", "vgg"),
                        help="the perceptual distance's backbone (default alex)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip clips of a --data folder that cannot be read at --frames frames (too short, "
                             "corrupt) and list each, with the reason, under 'skipped' in results.json")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--chunk-frames", type=int, default=None, help="encode/decode chunk (default one-shot)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the tokenizer's compute precision (auto: bf16 where the CPU multiplies bf16 fast); "
                             "metrics and FVD features are always fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fvd", action="store_true", default=None,
                        help="also compute rFVD (I3D; slow on CPU); flagged unreliable below 1600 clips")
    parser.add_argument("--tiling-size", type=int, default=0, help="frame size for the tiled-vs-untiled check (0: skip)")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--tile-overlap", type=int, default=64)
    parser.add_argument("--png-clips", type=int, default=8, help="side-by-side PNGs for the first N clips")
    parser.add_argument("--out", default="outputs/recon")


def _main(args) -> int:
    result = run(args)
    print(json.dumps(result, indent=2))
    return 0


def register(eval_subparsers) -> None:
    parser = eval_subparsers.add_parser("recon", help="reconstruction benchmark of a trained tokenizer",
                                        description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(func=_main)
