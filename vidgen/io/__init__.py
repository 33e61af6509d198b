"""Video and image I/O. Videos are ``(3, T, H, W)`` float tensors in ``[-1, 1]``."""
from vidgen.io.folders import check_folder, make_folder
from vidgen.io.images import contact_sheet, save_image
from vidgen.io.video import (
    CONTAINER_SUFFIXES,
    FRAME_SUFFIXES,
    VideoInfo,
    probe_video,
    read_video,
    resize_and_center_crop,
    to_uint8_frames,
)
from vidgen.io.video_writer import VideoWriter, write_video

__all__ = [
    "CONTAINER_SUFFIXES",
    "FRAME_SUFFIXES",
    "VideoInfo",
    "VideoWriter",
    "check_folder",
    "contact_sheet",
    "make_folder",
    "probe_video",
    "read_video",
    "resize_and_center_crop",
    "save_image",
    "to_uint8_frames",
    "write_video",
]
