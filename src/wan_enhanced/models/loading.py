"""Load the three TI2V models (text encoder, DiT, VAE) from random init, a diffusers layout, or the
official layout, and say how long it took and how many bytes were read (one ``LoadResult`` each)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from .checkpoint import LAYOUTS, LoadResult, tokenizer_dir
from .presets import ModelPreset
from .random_init import random_dit, random_t5, random_vae
from .tokenizer import ByteTokenizer, load_tokenizer

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
WEIGHT_KINDS = ("random", *LAYOUTS)


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES) if folder.is_dir() else []


def _strict(info: dict[str, Any], folder: Path) -> None:
    """Turn diffusers/transformers loading info into an error naming the first bad key."""
    files = ", ".join(p.name for p in _weight_files(folder)) or str(folder)
    for field, what in (("missing_keys", "missing key"), ("unexpected_keys", "unexpected key"),
                        ("mismatched_keys", "wrong shape for key")):
        keys = sorted(info.get(field) or [], key=str)
        if keys:
            key = keys[0] if not isinstance(keys[0], (tuple, list)) else keys[0][0]
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise WeightsError(f"{folder}/{files}: {what} {key}{more}")
    if info.get("error_msgs"):
        raise WeightsError(f"{folder}: {str(info['error_msgs'][0]).splitlines()[0]}")


def _from_pretrained(cls: Any, folder: Path, **kwargs: Any) -> Any:
    if not folder.is_dir():
        raise WeightsError(f"missing {folder}")
    if not _weight_files(folder):
        raise WeightsError(f"{folder}: no weight file (*.safetensors / *.bin)")
    try:
        model, info = cls.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - library errors become one line naming the folder
        raise WeightsError(f"{folder}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    _strict(info, folder)
    return model


def _bytes(folder: Path) -> tuple[int, list[str]]:
    files = _weight_files(folder)
    return sum(p.stat().st_size for p in files), [str(p) for p in files]


class ModelLoader:
    """Builds or loads each model on request; ``kind`` is 'random', 'diffusers' or 'official'."""

    def __init__(self, preset: ModelPreset, kind: str, ckpt_dir: str | None, seed: int = 0) -> None:
        if kind not in WEIGHT_KINDS:
            raise WeightsError(f"weights kind {kind!r} is not known; allowed: {', '.join(WEIGHT_KINDS)}")
        if kind != "random" and not ckpt_dir:
            raise WeightsError(f"--weights {kind} needs --ckpt_dir")
        self.preset, self.kind, self.seed = preset, kind, seed
        self.root = Path(ckpt_dir) if ckpt_dir else None

    def text_encoder(self, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> tuple[Any, Any, LoadResult]:
        """(UMT5 encoder, tokenizer, LoadResult); the tokenizer's load is timed with the encoder's."""
        t0 = time.perf_counter()
        nbytes, files = 0, []
        if self.kind == "random":
            model, tok = random_t5(self.preset, device, dtype, seed=self.seed + 2), ByteTokenizer(
                self.preset.t5["vocab_size"])
        elif self.kind == "diffusers":
            from transformers import UMT5EncoderModel

            folder = self.root / "text_encoder"
            model = _from_pretrained(UMT5EncoderModel, folder, dtype=dtype).to(device)
            tok = load_tokenizer(tokenizer_dir(self.root, "diffusers"))
            nbytes, files = _bytes(folder)
        else:
            from .official import load_official_t5

            model, res = load_official_t5(self.root, self.preset, device, dtype)
            tok = load_tokenizer(tokenizer_dir(self.root, "official"))
            nbytes, files = res.bytes_read, list(res.files)
        model.eval().requires_grad_(False)
        return model, tok, self._result("text_encoder", t0, nbytes, files)

    def _result(self, name: str, t0: float, nbytes: int, files: list[str]) -> LoadResult:
        return LoadResult(model=name, kind=self.kind, files=files, bytes_read=nbytes,
                          seconds=time.perf_counter() - t0)

    def dit(self, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> tuple[Any, LoadResult]:
        """(WanTransformer3DModel, LoadResult)."""
        from diffusers import WanTransformer3DModel

        from . import official

        return self._load("dit", device, dtype, lambda: random_dit(self.preset, device, dtype, seed=self.seed),
                          WanTransformer3DModel, "transformer", official.load_official_dit)

    def vae(self, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[Any, LoadResult]:
        """(AutoencoderKLWan, LoadResult)."""
        from diffusers import AutoencoderKLWan

        from . import official

        return self._load("vae", device, dtype, lambda: random_vae(self.preset, device, dtype, seed=self.seed + 1),
                          AutoencoderKLWan, "vae", official.load_official_vae)

    def _load(self, name: str, device: torch.device, dtype: torch.dtype, build_random: Any, cls: Any,
              subfolder: str, load_official: Any) -> tuple[Any, LoadResult]:
        """One diffusers model from random init, a diffusers subfolder or the official layout."""
        t0 = time.perf_counter()
        nbytes, files = 0, []
        if self.kind == "random":
            model = build_random()
        elif self.kind == "diffusers":
            folder = self.root / subfolder
            model = _from_pretrained(cls, folder, torch_dtype=dtype).to(device)
            nbytes, files = _bytes(folder)
        else:
            model, res = load_official(self.root, self.preset, device, dtype)
            nbytes, files = res.bytes_read, list(res.files)
        model.eval().requires_grad_(False)
        return model, self._result(name, t0, nbytes, files)
