"""Write decoded frames to an mp4 (H.264 through imageio-ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_mp4(frames: np.ndarray, path: str | Path, fps: int = 24) -> Path:
    """Save ``frames`` (F, H, W, 3) floats in [0, 1] or uint8 as an mp4 at ``fps``; returns the path."""
    import imageio.v2 as imageio

    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    if not path.is_file() or path.stat().st_size == 0:  # ffmpeg can fail without raising
        raise OSError(f"{path}: the video was not written")
    return path
