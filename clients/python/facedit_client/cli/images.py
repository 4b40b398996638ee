"""Pictures the command line composes from the gateway's images: animated GIFs and grids.
They need Pillow, an optional extra: pip install 'facedit-client[images]'. Everything else
(single images, frames in a folder) is written as the gateway's bytes, without Pillow."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

INSTALL_HINT = "pip install 'facedit-client[images]' (Pillow)"


class MissingExtra(RuntimeError):
    """Pillow is not installed; the message says what to install (exit code USAGE)."""


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise MissingExtra(f"GIFs and grids need Pillow: {INSTALL_HINT}; or write the frames to a folder "
                           f"(-o frames/), which needs nothing more") from None
    return Image


def _open(images: Sequence[bytes], scale: int) -> list:
    Image = _pillow()
    frames = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
    if scale > 1:
        frames = [f.resize((f.width * scale, f.height * scale), Image.Resampling.NEAREST) for f in frames]
    return frames


def save_gif(images: Sequence[bytes], path: Path, duration_ms: int = 120, scale: int = 1,
             boomerang: bool = False) -> None:
    """An animated GIF, looping forever, `duration_ms` per frame; boomerang: forth and back."""
    frames = _open(images, scale)
    if boomerang and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)


def save_grid(images: Sequence[bytes], path: Path, columns: int | None = None, scale: int = 1) -> None:
    """The images in a grid, row by row, `columns` wide (default: one row); format by extension."""
    Image = _pillow()
    frames = _open(images, scale)
    cols = max(1, min(columns or len(frames), len(frames)))
    rows = math.ceil(len(frames) / cols)
    w, h = max(f.width for f in frames), max(f.height for f in frames)
    grid = Image.new("RGB", (w * cols, h * rows), "white")
    for i, frame in enumerate(frames):
        grid.paste(frame, ((i % cols) * w, (i // cols) * h))
    grid.save(path)
