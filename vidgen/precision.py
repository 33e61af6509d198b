"""Which floating-point precision vidgen computes in: one small decision, made in one place.

``precision`` is ``"auto" | "fp32" | "bf16"`` everywhere a user chooses it (trainers, pipelines, the CLI, the demo).
``auto`` means bf16 where the hardware multiplies bf16 matrices fast, fp32 elsewhere:

* CUDA devices with bf16 support (``torch.cuda.is_bf16_supported()``);
* CPUs with AMX-BF16 or AVX512-BF16 (oneDNN then runs bf16 GEMM / conv on them). Measured on the 2-core dev
  machines (``eval/bench_generators.py`` etc. print both GEMM rates in every run): a 2048^3 GEMM runs 3.5-7x
  faster in bf16 than in fp32, with AMX (Intel) and with AVX512-BF16 alone (AMD Zen 5) alike.

Without those units bf16 is emulated and slower than fp32, so ``auto`` stays in fp32. fp16 is not offered on the
CPU: there it is no faster than fp32 (no AMX-FP16) and has a narrower range.

Where vidgen keeps fp32 inside a bf16 run (docs/precision.md): FSQ/LFQ/BSQ rounding decisions, loss reductions,
softmax statistics, norm statistics, the EMA and the optimizer's master weights.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from vidgen.errors import ConfigError

logger = logging.getLogger("vidgen")

PRECISIONS = ("auto", "fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Spellings accepted for each precision. YAML reads a bare ``no`` as False and ``off`` as False, so both count as
# fp32 (accelerate's ``mixed_precision=no``).
_ALIASES = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "no": "fp32", "none": "fp32", "false": "fp32",
            "off": "fp32", "full": "fp32", "bf16": "bf16", "bfloat16": "bf16"}


def cpu_bf16_units() -> list[str]:
    """The bf16 matrix units this CPU lists (``amx_bf16``, ``avx512_bf16``; Linux ``/proc/cpuinfo`` flags, else
    none: not Linux means no fast bf16 here, Apple / ARM included)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return [unit for unit in ("amx_bf16", "avx512_bf16") if f" {unit}" in flags]


def cpu_description() -> str:
    """The CPU's model name and the bf16 units it lists (Linux ``/proc/cpuinfo``; else the platform's name): what
    results files and portable checkpoints record of the machine."""
    import platform
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())
    return f"{name} ({', '.join(cpu_bf16_units()) or 'no bf16 units'})"


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True if this CPU has AMX-BF16 or AVX512-BF16 (:func:`cpu_bf16_units`) and oneDNN can use them."""
    has_units = bool(cpu_bf16_units())
    try:
        onednn = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    return has_units and onednn


def device_has_fast_bf16(device: torch.device | str | None = None) -> bool:
    """Whether bf16 matrix math is fast on ``device`` (default: CUDA if available, else the CPU)."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def normalize_precision(value, name: str = "precision") -> str:
    """``value`` as one of :data:`PRECISIONS`; accepts accelerate's ``no`` / YAML's False for fp32 and dtypes."""
    if value is False or value is None:
        return "fp32"
    if isinstance(value, torch.dtype):
        for key, dtype in _DTYPES.items():
            if value == dtype:
                return key
        raise ConfigError(f"{name}={value} is not supported; choose one of {PRECISIONS} (or torch.float32 / "
                          "torch.bfloat16)")
    if isinstance(value, str) and value.strip().lower() in _ALIASES:
        return _ALIASES[value.strip().lower()]
    hint = " (fp16 is GPU-only: on CUDA pass mixed_precision=fp16 to accelerate yourself)" if str(value) in (
        "fp16", "float16") else ""
    raise ConfigError(f"{name}={value!r} is not a precision; choose one of {PRECISIONS}{hint}")


def resolve_precision(value="auto", device: torch.device | str | None = None, name: str = "precision") -> str:
    """``"fp32"`` or ``"bf16"``: ``value`` with ``auto`` decided for ``device``. Logs what ``auto`` chose."""
    precision = normalize_precision(value, name)
    if precision != "auto":
        return precision
    chosen = "bf16" if device_has_fast_bf16(device) else "fp32"
    where = torch.device(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    logger.info("precision=auto chose %s on %s (fast bf16 matrix units: %s)", chosen, where, chosen == "bf16")
    return chosen


def resolve_dtype(value="auto", device: torch.device | str | None = None, name: str = "dtype") -> torch.dtype:
    """:func:`resolve_precision` as a ``torch.dtype`` (float32 or bfloat16)."""
    return _DTYPES[resolve_precision(value, device, name)]


def dtype_argument(dtype=None, torch_dtype=None):
    """The one dtype of a loader given ``dtype`` and / or ``torch_dtype`` (diffusers' and transformers' spelling of
    the same argument, taken as it is, without a warning). Both given: they must name the same dtype (``"fp32"`` and
    ``torch.float32`` do), else an :class:`~vidgen.errors.InvalidInputError` naming both."""
    if torch_dtype is None:
        return dtype
    if dtype is None or _same_dtype(dtype, torch_dtype):
        return dtype if dtype is not None else torch_dtype
    from vidgen.errors import InvalidInputError
    raise InvalidInputError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree (torch_dtype is diffusers' "
                            "spelling of dtype); pass one of them")


def _same_dtype(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(
            _same_dtype(a[k], b[k]) for k in a)
    try:
        return a == b or normalize_precision(a) == normalize_precision(b)
    except ConfigError:
        return False


def accelerate_mixed_precision(value) -> str:
    """The ``mixed_precision`` string accelerate expects for a vidgen precision (``"no"`` or ``"bf16"``)."""
    return "bf16" if value == "bf16" else "no"


def execution_device(module: torch.nn.Module, weights_device: torch.device) -> torch.device:
    """Where ``module``'s forward computes: ``weights_device``, or under diffusers' model offload (accelerate's hook
    moves the weights there at each call) the hook's execution device, so callers put inputs and state there."""
    hook_device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    return torch.device(hook_device) if hook_device is not None else weights_device


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device_type`` right now, or None if autocast is off there (or does not
    know the device type, e.g. ``meta`` under accelerate's offload)."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except RuntimeError:
        return None
    return None


def compute_dtypes(model_dtype: torch.dtype, device_type: str) -> tuple[torch.dtype, ...]:
    """The input dtypes a model accepts: its own compute dtype, plus autocast's while autocast is on (autocast
    casts every input of the ops it covers, so fp32 and bf16 inputs give the same computation)."""
    amp = autocast_dtype(device_type)
    return (model_dtype,) if amp is None or amp == model_dtype else (model_dtype, amp)
