"""The condition inputs of a call (``image=``, ``last_image=``, ``video=``, ``strength=``, with diffusers' own
argument names) checked once, before any work, with errors that name the argument and the fix. Which pipelines take
them: a diffusers folder of a conditioned class of its family (``Family.conditioned``); vidgen's own pipelines and
text-to-video folders refuse them by name.

The values are kept raw (an image: a PIL image or a ``(3, H, W)`` tensor, as diffusers' image-to-video classes take
it, whose image encoders read it raw too; a video: a list of frames, an ``(F, H, W, 3)`` array in [0, 1] or an
``(F, 3, H, W)`` tensor, as ``VideoProcessor.preprocess_video`` takes it): the family's pipeline class resizes them
to the call's ``height`` x ``width``.
"""
from __future__ import annotations

from typing import Any

from vidgen.errors import InvalidInputError, UnsupportedError

#: the call's condition arguments, in the order they are checked
CONDITION_INPUTS = ("image", "last_image", "video", "strength")


def given_conditions(call) -> dict:
    """``{name: value}`` of the condition arguments the call gives (not None)."""
    return {n: call.get(n) for n in CONDITION_INPUTS if call.get(n) is not None}


def refuse_conditions(call, owner: str, why: str) -> None:
    """:class:`UnsupportedError` naming the condition arguments the call gives, where ``owner`` takes none."""
    given = given_conditions(call)
    if given:
        raise UnsupportedError(f"{', '.join(given)}: {owner} samples from text only ({why})")


def _shape_of(name: str, value: Any, arrays: bool = True) -> tuple:
    """``(H, W, channels)`` of one image, or a named error (``arrays``: numpy frames allowed, as in a video)."""
    import numpy as np
    import torch
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(value, Image.Image):
        if value.mode != "RGB":
            raise InvalidInputError(f"{name}: a PIL image in mode {value.mode!r}; the pipeline takes RGB images "
                                    f"(pass {name}.convert('RGB'))")
        return value.height, value.width, 3
    if isinstance(value, np.ndarray) and not arrays:
        raise InvalidInputError(f"{name}: a numpy array; pass a PIL image (Image.fromarray((x * 255).astype('uint8')) "
                                f"for values in [0, 1]) or a (3, H, W) tensor, as diffusers' pipelines take {name}")
    if isinstance(value, (np.ndarray, torch.Tensor)):
        shape = tuple(value.shape)
        if len(shape) == 4 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 3:
            raise InvalidInputError(f"{name}: an array / tensor of shape {tuple(value.shape)}; one image is (H, W, 3) "
                                    f"(numpy, values in [0, 1]) or (3, H, W) (torch)"
                                    + (" (for a video pass video=)" if len(shape) == 4 else ""))
        h, w, c = shape if isinstance(value, np.ndarray) else (shape[1], shape[2], shape[0])
        if c != 3:
            raise InvalidInputError(f"{name}: {c} channels (shape {tuple(value.shape)}); the pipeline takes RGB "
                                    "images with 3 channels, (H, W, 3) numpy or (3, H, W) torch")
        if not h or not w:
            raise InvalidInputError(f"{name}: an empty image (shape {tuple(value.shape)})")
        _check_pixels(name, value)
        return h, w, c
    also = ", or an (H, W, 3) array" if arrays else ""
    raise InvalidInputError(f"{name}: expected a PIL image or a (3, H, W) tensor{also}, got {type(value).__name__}")


def _check_pixels(name: str, value) -> None:
    """An image array / tensor holds float values in [0, 1], as diffusers' image processors take them."""
    import torch
    kind, layout = ("tensor", "(3, H, W) tensor") if torch.is_tensor(value) else ("array", "(H, W, 3) array")
    x = torch.as_tensor(value)
    if not x.is_floating_point():
        raise InvalidInputError(f"{name}: a {x.dtype} {kind}; pass a float {layout} in [0, 1] "
                                f"({name}.float() / 255 for 8-bit values)")
    x = x.detach().float()
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise InvalidInputError(f"{name}: {kind} values in [{float(x.min()):.3g}, {float(x.max()):.3g}]; pass a "
                                f"{layout} in [0, 1], as diffusers' pipelines take it ((x + 1) / 2 for values in "
                                "[-1, 1])")


def check_image(name: str, value: Any) -> tuple:
    """One image as diffusers' image-to-video pipelines take it (PIL, or a (3, H, W) tensor) -> ``(H, W, 3)``; a
    named :class:`InvalidInputError` otherwise."""
    return _shape_of(name, value, arrays=False)


def video_frames(value: Any) -> int:
    """The frame count of a ``video=`` (one video), each frame checked as an image, all of one size."""
    import numpy as np
    import torch
    if isinstance(value, (np.ndarray, torch.Tensor)):
        shape = tuple(value.shape)
        if len(shape) == 5 and shape[0] == 1:
            value, shape = value[0], shape[1:]
        if len(shape) != 4:
            raise InvalidInputError(f"video: an array / tensor of shape {tuple(shape)}; one video is (F, H, W, 3) "
                                    "(numpy, values in [0, 1]) or (F, 3, H, W) (torch), or a list of frames")
        frames = list(value)
    elif isinstance(value, (list, tuple)):
        frames = list(value)
    else:
        raise InvalidInputError(f"video: expected a list of frames (PIL images / arrays), an (F, H, W, 3) array or "
                                f"an (F, 3, H, W) tensor, got {type(value).__name__}")
    if not frames:
        raise InvalidInputError("video: no frames; pass at least one frame")
    sizes = {_shape_of(f"video[{i}]", f)[:2] for i, f in enumerate(frames)}
    if len(sizes) > 1:
        raise InvalidInputError(f"video: frames of different sizes {sorted(sizes)}; resize them to one size")
    return len(frames)


def check_strength(strength: Any) -> float:
    """``strength`` in (0, 1]: how much of the schedule a video-to-video call samples."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise InvalidInputError(f"strength must be a number in (0, 1] (the share of the schedule sampled from the "
                                f"noised video; 1 ignores it), got {strength!r}")
    return float(strength)


def check_conditions(call, pipeline_class: str, inputs: tuple, others: dict) -> None:
    """The call's condition arguments against the loaded class (``inputs``: those it takes, the required one first;
    ``others``: ``{class name: its inputs}`` of the family's other classes, named in the fix)."""
    given = given_conditions(call)
    bad = [n for n in given if n not in inputs]
    if bad:
        takers = [cls for cls, names in others.items() if set(bad) <= set(names)]
        fix = (f"load a folder of {' or '.join(takers)}" if takers else
               "the family has no pipeline class that takes it")
        raise UnsupportedError(f"{', '.join(bad)}: {pipeline_class} (the folder's class) does not take "
                               f"{'it' if len(bad) == 1 else 'them'}; {fix}")
    if not inputs:
        return
    if "last_image" in given and "image" not in given:
        raise InvalidInputError("last_image: given without image; a first-last-frame call needs both (image= the "
                                "first frame, last_image= the last)")
    if inputs[0] not in given:
        raise InvalidInputError(f"{inputs[0]}: {pipeline_class} samples from {'an' if inputs[0] == 'image' else 'a'} "
                                f"{inputs[0]}; pass {inputs[0]}=")
    for name in ("image", "last_image"):
        if name in given:
            check_image(name, given[name])
    if "video" in given:
        video_frames(given["video"])
    if "strength" in given:
        check_strength(given["strength"])


def check_condition_size(pipeline_class: str, tokenizer, patch_size, num_frames: int, height: int,
                         width: int) -> None:
    """A conditioned call encodes its image / video into the latent grid: whole latent frames and cells only
    (``tokenizer``: the ``DiffusersVideoVAE``; ``patch_size``: the transformer's ``(pt, ph, pw)``)."""
    _, ph, pw = patch_size
    tc, sc = tokenizer.temporal_compression_ratio, tokenizer.spatial_compression_ratio
    if (num_frames - 1) % tc:
        raise InvalidInputError(f"num_frames={num_frames}: {pipeline_class} encodes its condition in whole latent "
                                f"frames; pass 1 + a multiple of {tc} (e.g. {(num_frames - 1) // tc * tc + 1})")
    if height % (sc * ph) or width % (sc * pw):
        raise InvalidInputError(f"height={height}, width={width}: {pipeline_class} needs multiples of "
                                f"({sc * ph}, {sc * pw}) (the VAE's {sc} pixels per latent cell, the transformer's "
                                f"patch); e.g. {height // (sc * ph) * sc * ph}x{width // (sc * pw) * sc * pw}")


def condition_defaults(call, pipeline_class: str, spec, size: dict, tokenizer, patch_size) -> dict:
    """The call's values the condition fixes, for the settings step: the class's input defaults (``strength``), the
    video's frame count as ``num_frames`` (a class whose frame count is its input's), checked against the grid."""
    out = {k: v for k, v in spec.input_defaults.items() if call.get(k) is None}
    if spec.frames_from_input and call.video is not None:
        frames = video_frames(call.video)
        if call.num_frames not in (None, frames):
            raise InvalidInputError(f"num_frames={call.num_frames}: {pipeline_class} samples as many frames as the "
                                    f"video ({frames}); leave num_frames out")
        out["num_frames"] = frames
    if given_conditions(call):  # the condition is encoded into the latent grid
        check_condition_size(pipeline_class, tokenizer, patch_size, out.get("num_frames", size["num_frames"]),
                             size["height"], size["width"])
    return out


def image_pixels(name: str, value: Any, height: int, width: int):
    """One image as the conditioned calls take it (a PIL RGB image, or a ``(3, H, W)`` / ``(1, 3, H, W)`` float
    tensor in [0, 1]), of exactly ``height`` x ``width`` -> ``(1, 3, 1, H, W)`` pixels in [-1, 1]; a named
    :class:`InvalidInputError` otherwise. vidgen's own pipelines encode it with their VAE as it is (no resize)."""
    import numpy as np
    import torch
    h, w, _ = check_image(name, value)
    if (h, w) != (height, width):
        raise InvalidInputError(f"{name}: {h}x{w} pixels (height x width), but the call makes {height}x{width} "
                                f"frames; pass height={h}, width={w}, or resize the image to {height}x{width}")
    if not torch.is_tensor(value):  # a PIL image (check_image refused the rest)
        return torch.from_numpy(np.asarray(value).copy()).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1
    return value.detach().float().reshape(1, 3, 1, h, w) * 2 - 1  # check_image checked dtype and range


def first_chunk_latents(tokenizer, image: Any, *, height: int, width: int, chunk_frames: int = 1,
                        name: str = "image"):
    """The first latent chunk of a block-causal stream started from ``image`` (checked by :func:`image_pixels`):
    the image encoded by ``tokenizer`` (vidgen's VAE or a ``DiffusersVideoVAE``) into normalized latents
    ``(1, C, chunk_frames, h, w)``, which the stream commits clean (``first_frames=``); frame 0 of its decoding is
    the VAE's reconstruction of the image. A chunk of more latent frames than one image makes is the image held
    still (``1 + tc * (chunk_frames - 1)`` frames of it, ``tc`` the VAE's temporal compression)."""
    from vidgen.tokenizers.tokens import video_to_tokens
    import torch
    pixels = image_pixels(name, image, height, width)
    frames = 1 + tokenizer.codec_config.temporal_compression * (chunk_frames - 1)
    with torch.no_grad():
        latents = video_to_tokens(tokenizer, pixels.expand(-1, -1, frames, -1, -1))
    return latents[:, :, :chunk_frames]
