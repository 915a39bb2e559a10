"""The checkpoint path shared by every loader: which layout a ``--ckpt_dir`` holds, and what a load returned.

Two layouts are read (``Layout``):

- ``diffusers`` (Wan-AI/Wan2.2-TI2V-5B-Diffusers): ``transformer/``, ``vae/``, ``text_encoder/`` (each a
  ``save_pretrained`` folder) and ``tokenizer/``;
- ``official`` (Wan-AI/Wan2.2-TI2V-5B): ``config.json``, the DiT shards and their index, the T5 and VAE
  ``.pth`` files and ``google/umt5-xxl/`` (see :mod:`wan_enhanced.models.official`).

:func:`detect_layout` checks the files each layout names at fixed paths (not the weight files inside
the folders nor the shards the index lists: the loaders check those, naming the file); every problem
is one :class:`~wan_enhanced.errors.WeightsError` line. This module imports nothing heavy, so
``config.validate`` can call it before any model code is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from ..errors import WeightsError

Layout = Literal["diffusers", "official"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
#: ``LoadResult.kind``: a layout, or random weights (nothing read)
WeightsKind = Literal["random", "diffusers", "official"]

PathLike = str | os.PathLike[str]

# official layout (Wan-AI/Wan2.2-TI2V-5B)
CONFIG_FILE = "config.json"
DIT_INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
VAE_FILE = "Wan2.2_VAE.pth"
TOKENIZER_DIR = "google/umt5-xxl"

#: the tokenizer folder of each layout, relative to the checkpoint directory
TOKENIZER_DIRS: dict[Layout, str] = {"diffusers": "tokenizer", "official": TOKENIZER_DIR}

#: (path, is a folder) that each layout must hold, in the order they are reported missing
LAYOUT_FILES: dict[Layout, tuple[tuple[str, bool], ...]] = {
    "diffusers": (("transformer/config.json", False), ("vae/config.json", False), ("text_encoder/config.json", False),
                  (TOKENIZER_DIRS["diffusers"], True)),
    "official": ((CONFIG_FILE, False), (DIT_INDEX_FILE, False), (T5_FILE, False), (VAE_FILE, False),
                 (TOKENIZER_DIRS["official"], True)),
}


def missing_files(ckpt_dir: PathLike, layout: Layout) -> list[str]:
    """The paths (relative to ``ckpt_dir``) that ``layout`` needs and ``ckpt_dir`` lacks; empty: complete."""
    root = Path(ckpt_dir)
    return [name for name, is_dir in LAYOUT_FILES[layout]
            if not ((root / name).is_dir() if is_dir else (root / name).is_file())]


def detect_layout(ckpt_dir: PathLike, expected: Layout | None = None) -> Layout:
    """The layout ``ckpt_dir`` holds; with ``expected``, check that it holds that one.

    A complete diffusers layout wins over a complete official one; an incomplete directory is judged by
    its hints (``transformer/`` or ``model_index.json``: diffusers; ``config.json`` or ``Wan2.2_VAE.pth``:
    official). Raises a WeightsError (its text names ``--ckpt_dir``, where the directory comes from) when
    the directory is unreadable, matches no layout, or lacks a file: the first missing one is named.
    """
    shown = os.fspath(ckpt_dir)
    root = Path(ckpt_dir)
    if not root.is_dir():
        raise WeightsError(f"--ckpt_dir: {shown!r} does not exist or is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise WeightsError(f"--ckpt_dir: {shown!r} is not readable")
    if expected is not None and expected not in LAYOUTS:
        raise WeightsError(f"layout {expected!r} is not known; allowed: {', '.join(LAYOUTS)}")
    layout = expected
    if layout is None:
        if not missing_files(root, "diffusers"):
            layout = "diffusers"
        elif not missing_files(root, "official"):
            layout = "official"
        elif (root / "transformer").exists() or (root / "model_index.json").exists():
            layout = "diffusers"
        elif (root / CONFIG_FILE).exists() or (root / VAE_FILE).exists():
            layout = "official"
        else:
            needs = {name: ", ".join(n for n, _ in LAYOUT_FILES[name]) for name in LAYOUTS}
            raise WeightsError(f"--ckpt_dir {shown}: neither a diffusers layout (needs {needs['diffusers']}) "
                               f"nor an official layout (needs {needs['official']})")
    missing = missing_files(root, layout)
    if missing:
        raise WeightsError(f"--ckpt_dir {shown}: missing {missing[0]} (needed for --weights {layout})")
    return layout


def tokenizer_dir(ckpt_dir: PathLike, layout: Layout) -> Path:
    """The tokenizer folder of a ``layout`` checkpoint."""
    return Path(ckpt_dir) / TOKENIZER_DIRS[layout]


@dataclass
class LoadResult:
    """What one load produced: which model, from which files, how many bytes in how many seconds.

    ``kind`` is the weights kind (``random``: built, nothing read; else the layout read). Every loader
    (random, diffusers, official) returns one; the report's ``weights.load`` entries are made of them.
    """

    model: str  # "text_encoder", "dit" or "vae"
    kind: WeightsKind
    files: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def layout(self) -> Layout | None:
        """The checkpoint layout read, or None for random weights."""
        return None if self.kind == "random" else self.kind

    @property
    def gb_per_s(self) -> float | None:
        """Read throughput, or None when nothing was read (random weights)."""
        return self.bytes_read / 1e9 / self.seconds if self.bytes_read and self.seconds > 0 else None
