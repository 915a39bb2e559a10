"""Load (and write) checkpoints in the official Wan2.2 TI2V-5B ``ckpt_dir`` layout, key by key.

Why this module is long (~470 lines): the loaders of the three official files and their exact inverse,
the writer, are kept together so a key or dtype rule changes in one place; the key maps themselves live in
``official_keys.py``, the layout detection in ``checkpoint.py``.

Layout (Wan-AI/Wan2.2-TI2V-5B)::

    config.json                                         WanModel config (dim, num_layers, ...)
    diffusion_pytorch_model-0000{1,2,3}-of-00003.safetensors  DiT, official key names
    diffusion_pytorch_model.safetensors.index.json      key -> shard
    models_t5_umt5-xxl-enc-bf16.pth                     Wan's T5Encoder state dict
    Wan2.2_VAE.pth                                      Wan's WanVAE_ state dict
    google/umt5-xxl/                                    tokenizer files

Loading is lazy and memory-light: each module is built on the ``meta`` device, the safetensors shards
are read straight to the target device (``safe_open(device=...)``), the ``.pth`` files are memory
mapped (``torch.load(mmap=True, weights_only=True)``), each tensor is cast once to its final dtype
(``_keep_in_fp32_modules`` stay fp32) and the tensors are assigned into the module
(``load_state_dict(assign=True)``). Non-persistent buffers (the DiT's rope tables) are rebuilt.

Every check is strict and happens before any tensor is read: each official key must map onto exactly
one parameter with the same shape, and every parameter must be filled. Any violation raises a
one-line :class:`~wan_enhanced.errors.WeightsError` naming the file and the key. Each loader returns
the model and a :class:`~wan_enhanced.models.checkpoint.LoadResult`; the layout's file names and its
detection live in :mod:`~wan_enhanced.models.checkpoint`, the tokenizer folder is read by
:func:`~wan_enhanced.models.tokenizer.load_tokenizer`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import UMT5Config, UMT5EncoderModel

from ..errors import WeightsError
from .checkpoint import CONFIG_FILE, DIT_INDEX_FILE, T5_FILE, TOKENIZER_DIR, VAE_FILE, LoadResult
from .official_keys import (
    T5_TIED_KEYS,
    dit_diffusers_to_official,
    dit_key_to_official,
    dit_official_to_diffusers,
    t5_hf_to_official,
    t5_official_to_hf,
    vae_diffusers_to_official,
    vae_official_to_diffusers,
)
from .presets import ModelPreset

DEFAULT_DIT_SHARDS = 3

PathLike = str | os.PathLike[str]
DeviceLike = torch.device | str


def dit_shard_name(index: int, total: int) -> str:
    """File name of DiT shard ``index`` (1-based) of ``total``, as in the official layout."""
    return f"diffusion_pytorch_model-{index:05d}-of-{total:05d}.safetensors"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _fail(path: PathLike, message: str) -> WeightsError:
    return WeightsError(_one_line(f"{path}: {message}"))


# ------------------------------------------------------------------------------------ file reading


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _fail(path, "file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"cannot read JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise _fail(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    """Memory-map a ``.pth`` state dict on the CPU; any problem becomes a WeightsError naming the file."""
    if not path.is_file():
        raise _fail(path, "file not found")
    try:
        try:
            obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # legacy (non-zip) serialization cannot be memory mapped: read it normally
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/IO error: name the file
        raise _fail(path, f"cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise _fail(path, f"not a state dict: expected a dict of tensors, got {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _fail(path, f"not a state dict: key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise _fail(path, f"not a state dict: key {key!r} holds {type(value).__name__}, not a tensor")
    return obj


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key → shape of one safetensors file, from its header only."""
    if not path.is_file():
        raise _fail(path, "file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt file
        raise _fail(path, f"cannot read safetensors file ({type(exc).__name__}: {exc})") from exc


# ----------------------------------------------------------------------------------- key matching


@dataclass
class _Source:
    file: Path
    key: str
    shape: tuple[int, ...]


def _match(sources: Iterable[_Source], mapping: Callable[[str], str | None], targets: Mapping[str, tuple[int, ...]],
           official_name: Callable[[str], str], missing_file: Callable[[str], PathLike],
           what: str) -> dict[str, _Source]:
    """Check that official keys and model parameters correspond one to one with equal shapes.

    ``mapping`` gives the model key of an official key (None if it has none); ``targets`` are the model's
    keys and shapes; ``official_name`` names a model key officially (for "missing key" errors) and
    ``missing_file`` says which file should have held it. Returns model key → source.
    """
    seen: dict[str, _Source] = {}
    filled: dict[str, _Source] = {}
    for src in sources:
        if src.key in seen:
            raise _fail(src.file, f"duplicate key {src.key!r} (also in {seen[src.key].file})")
        seen[src.key] = src
        target = mapping(src.key)
        if target is None or target not in targets:
            raise _fail(src.file, f"unexpected key {src.key!r}: not part of the {what} architecture")
        if target in filled:
            raise _fail(src.file, f"keys {filled[target].key!r} and {src.key!r} both map to {target!r}")
        if tuple(targets[target]) != src.shape:
            raise _fail(src.file, f"key {src.key!r} has shape {list(src.shape)} but the {what} expects "
                                  f"{list(targets[target])}")
        filled[target] = src
    for target in targets:
        if target not in filled:
            name = official_name(target)
            raise _fail(missing_file(name), f"missing key {name!r} (needed by the {what})")
    return filled


def _target_shapes(model: torch.nn.Module, skip: Iterable[str] = ()) -> dict[str, tuple[int, ...]]:
    skipped = set(skip)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in skipped}


def _want_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype, fp32: Iterable[str]) -> torch.dtype:
    if not tensor.is_floating_point():
        return tensor.dtype
    parts = name.split(".")
    return torch.float32 if any(p in parts for p in fp32) else dtype


def _assign(model: torch.nn.Module, state: dict[str, torch.Tensor], path: PathLike) -> None:
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except Exception as exc:  # noqa: BLE001 - the checks above should make this unreachable
        raise _fail(path, f"cannot assign the tensors ({type(exc).__name__}: {exc})") from exc


def _check_loaded(model: torch.nn.Module, what: str, path: PathLike) -> None:
    """Fail loudly if any parameter or buffer is still on the meta device."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_meta:  # a tensor that no file filled (should have been caught above)
            raise _fail(path, f"{what}: {name} was not loaded")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _result(what: str, files: list[Path], t0: float, device: torch.device) -> LoadResult:
    _sync(device)
    seconds = time.perf_counter() - t0
    return LoadResult(model=what, kind="official", files=[str(p) for p in files],
                      bytes_read=sum(p.stat().st_size for p in files), seconds=seconds)


# ---------------------------------------------------------------------------------------- DiT index


def _dit_shards_from_index(ckpt: Path) -> tuple[dict[str, str], list[str]]:
    index_path = ckpt / DIT_INDEX_FILE
    index = _read_json(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise _fail(index_path, "no 'weight_map' (key -> shard file) in the index")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise _fail(index_path, "'weight_map' must map key names to shard file names")
    shards = sorted(set(weight_map.values()))
    for name in shards:
        if Path(name).name != name:
            raise _fail(index_path, f"shard {name!r} is not a file name in the checkpoint directory")
    return weight_map, shards


# ------------------------------------------------------------------------------------------- config


def official_dit_config(dit_config: Mapping[str, Any], text_len: int) -> dict[str, Any]:
    """The official ``config.json`` (``WanModel``) that describes a diffusers DiT config."""
    import diffusers

    return {
        "_class_name": "WanModel",
        "_diffusers_version": diffusers.__version__,
        "dim": int(dit_config["num_attention_heads"]) * int(dit_config["attention_head_dim"]),
        "eps": float(dit_config["eps"]),
        "ffn_dim": int(dit_config["ffn_dim"]),
        "freq_dim": int(dit_config["freq_dim"]),
        "in_dim": int(dit_config["in_channels"]),
        "model_type": "ti2v",
        "num_heads": int(dit_config["num_attention_heads"]),
        "num_layers": int(dit_config["num_layers"]),
        "out_dim": int(dit_config["out_channels"]),
        "text_len": int(text_len),
    }


def check_official_config(ckpt_dir: PathLike, preset: ModelPreset) -> dict[str, Any]:
    """Read ``config.json`` and check it describes ``preset``'s DiT; a mismatch names the field.

    ``dim``, ``num_layers``, ``num_heads``, ``in_dim`` and ``out_dim`` are required; ``ffn_dim``,
    ``freq_dim`` and ``model_type`` are checked when present.
    """
    path = Path(ckpt_dir) / CONFIG_FILE
    config = _read_json(path)
    expected = official_dit_config(preset.dit, preset.text_len)
    # text_len is not checked: it sizes the prompt, not any weight.
    for name in ("dim", "num_layers", "num_heads", "in_dim", "out_dim", "ffn_dim", "freq_dim", "model_type"):
        required = name in ("dim", "num_layers", "num_heads", "in_dim", "out_dim")
        if name not in config:
            if required:
                raise _fail(path, f"config field {name!r} is missing (preset {preset.name!r} needs "
                                  f"{expected[name]!r})")
            continue
        if config[name] != expected[name]:
            raise _fail(path, f"config field {name!r} is {config[name]!r} but preset {preset.name!r} needs "
                              f"{expected[name]!r}")
    return config


# ------------------------------------------------------------------------------------------ loaders


def load_official_dit(ckpt_dir: PathLike, preset: ModelPreset, device: DeviceLike,
                      dtype: torch.dtype = torch.bfloat16) -> tuple[WanTransformer3DModel, LoadResult]:
    """Load the official DiT shards into a ``WanTransformer3DModel`` built from ``preset.dit``.

    Keys are renamed with the diffusers wheel's converter; shards are read straight to ``device`` and
    cast to ``dtype`` (``_keep_in_fp32_modules`` parameters to fp32); the rope tables are rebuilt.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    ckpt = Path(ckpt_dir)
    check_official_config(ckpt, preset)
    weight_map, shard_names = _dit_shards_from_index(ckpt)
    index_path = ckpt / DIT_INDEX_FILE
    shards = [ckpt / name for name in shard_names]

    sources: list[_Source] = []
    for shard in shards:
        sources += [_Source(shard, k, s) for k, s in _safetensors_shapes(shard).items()]
    in_shard = {(src.file.name, src.key) for src in sources}
    for key, name in weight_map.items():
        if (name, key) not in in_shard:
            raise _fail(ckpt / name, f"missing key {key!r} (listed in {DIT_INDEX_FILE})")

    with torch.device("meta"):
        model = WanTransformer3DModel(**preset.dit)
    try:
        renames = dit_official_to_diffusers(src.key for src in sources)
    except ValueError as exc:  # two official keys land on one diffusers key
        raise _fail(index_path, str(exc)) from exc
    filled = _match(sources, renames.get, _target_shapes(model), dit_key_to_official,
                    lambda name: ckpt / weight_map[name] if name in weight_map else index_path, "DiT")

    fp32 = list(model._keep_in_fp32_modules or [])
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for target, src in filled.items():
        by_file.setdefault(src.file, []).append((target, src.key))
    state: dict[str, torch.Tensor] = {}
    for shard, pairs in by_file.items():
        try:
            with safe_open(str(shard), framework="pt", device=str(device)) as f:
                for target, key in pairs:
                    tensor = f.get_tensor(key)
                    state[target] = tensor.to(dtype=_want_dtype(target, tensor, dtype, fp32))
        except Exception as exc:  # noqa: BLE001 - unreadable data region
            raise _fail(shard, f"cannot read tensors ({type(exc).__name__}: {exc})") from exc
    _assign(model, state, index_path)
    del state

    # The rope cos/sin tables are non-persistent buffers (never in a checkpoint): rebuild them.
    with torch.device(device):
        model.rope = WanRotaryPosEmbed(int(preset.dit["attention_head_dim"]), tuple(preset.dit["patch_size"]),
                                       int(preset.dit.get("rope_max_seq_len", 1024)))
    _check_loaded(model, "DiT", index_path)
    model.eval().requires_grad_(False)
    return model, _result("dit", shards, t0, device)


def _load_pth_model(path: Path, model: torch.nn.Module, official_to_model: Mapping[str, str],
                    model_to_official: Mapping[str, str], skip: Mapping[str, str], device: torch.device,
                    dtype: torch.dtype, fp32: Iterable[str], what: str) -> None:
    state_cpu = _read_pth(path)
    sources = [_Source(path, k, tuple(v.shape)) for k, v in state_cpu.items()]
    filled = _match(sources, official_to_model.get, _target_shapes(model, skip),
                    lambda t: model_to_official.get(t, t), lambda _name: path, what)
    fp32 = list(fp32)
    state: dict[str, torch.Tensor] = {}
    try:
        for target, src in filled.items():
            tensor = state_cpu[src.key]
            state[target] = tensor.to(device=device, dtype=_want_dtype(target, tensor, dtype, fp32))
    except Exception as exc:  # noqa: BLE001 - mmapped data that cannot be read
        raise _fail(path, f"cannot read tensors ({type(exc).__name__}: {exc})") from exc
    for alias, source in skip.items():
        state[alias] = state[source]
    _assign(model, state, path)


def load_official_t5(ckpt_dir: PathLike, preset: ModelPreset, device: DeviceLike,
                     dtype: torch.dtype = torch.bfloat16) -> tuple[UMT5EncoderModel, LoadResult]:
    """Load ``models_t5_umt5-xxl-enc-bf16.pth`` (Wan's T5 names) into a transformers ``UMT5EncoderModel``.

    The input embedding stays tied (``encoder.embed_tokens`` is ``shared``). As in transformers, ``wo``
    is kept in fp32 only when ``dtype`` is fp16.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    path = Path(ckpt_dir) / T5_FILE
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**preset.t5, is_encoder_decoder=False))
    fp32 = list(model._keep_in_fp32_modules or []) if dtype == torch.float16 else []
    _load_pth_model(path, model, t5_official_to_hf(preset.t5), t5_hf_to_official(preset.t5), T5_TIED_KEYS,
                    device, dtype, fp32, "T5 encoder")
    for alias, source in T5_TIED_KEYS.items():  # assign=True made two Parameters: tie them again
        owner, _, leaf = alias.rpartition(".")
        src_owner, _, src_leaf = source.rpartition(".")
        setattr(model.get_submodule(owner), leaf, getattr(model.get_submodule(src_owner), src_leaf))
    _check_loaded(model, "T5 encoder", path)
    model.eval().requires_grad_(False)
    return model, _result("text_encoder", [path], t0, device)


def load_official_vae(ckpt_dir: PathLike, preset: ModelPreset, device: DeviceLike,
                      dtype: torch.dtype = torch.float32) -> tuple[AutoencoderKLWan, LoadResult]:
    """Load ``Wan2.2_VAE.pth`` (Wan's VAE names) into a diffusers ``AutoencoderKLWan`` from ``preset.vae``."""
    t0 = time.perf_counter()
    device = torch.device(device)
    path = Path(ckpt_dir) / VAE_FILE
    with torch.device("meta"):
        model = AutoencoderKLWan(**preset.vae)
    fp32 = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    _load_pth_model(path, model, vae_official_to_diffusers(preset.vae), vae_diffusers_to_official(preset.vae),
                    {}, device, dtype, fp32, "VAE")
    _check_loaded(model, "VAE", path)
    model.eval().requires_grad_(False)
    return model, _result("vae", [path], t0, device)


# ------------------------------------------------------------------------------------------- writer


def _cpu(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    out = tensor.detach().to(device="cpu", dtype=dtype if tensor.is_floating_point() else tensor.dtype)
    return out.contiguous()


def _split_shards(sizes: list[tuple[str, int]], shards: int) -> list[list[str]]:
    """Cut the ordered keys into ``shards`` consecutive groups of about equal bytes (none empty)."""
    if shards < 1 or shards > len(sizes):
        raise ValueError(f"shards must be between 1 and {len(sizes)} (the number of DiT tensors), got {shards}")
    total = sum(n for _, n in sizes)
    groups: list[list[str]] = [[] for _ in range(shards)]
    done, g = 0, 0
    for i, (key, n) in enumerate(sizes):
        later_groups, keys_left = shards - 1 - g, len(sizes) - i
        if groups[g] and later_groups > 0 and (done >= total * (g + 1) / shards or keys_left <= later_groups):
            g += 1
        groups[g].append(key)
        done += n
    return groups


def write_official_checkpoint(out_dir: PathLike, dit: WanTransformer3DModel, t5: UMT5EncoderModel,
                              vae: AutoencoderKLWan, tokenizer: Any = None, shards: int = DEFAULT_DIT_SHARDS, *,
                              text_len: int = 512, dit_dtype: torch.dtype = torch.float32,
                              t5_dtype: torch.dtype = torch.bfloat16,
                              vae_dtype: torch.dtype = torch.float32) -> list[Path]:
    """Write the three models (and ``tokenizer``, if given) in the official ``ckpt_dir`` layout.

    The inverse of the loaders: DiT as ``shards`` safetensors files plus index (stored in ``dit_dtype``,
    fp32 as the official files), T5 and VAE as ``.pth`` state dicts with Wan's key names, and the
    ``config.json`` of the DiT (``text_len`` goes there). Tensors are moved to the CPU one shard / one
    file at a time. Returns the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    config_path = out / CONFIG_FILE
    config_path.write_text(json.dumps(official_dit_config(dit.config, text_len), indent=2) + "\n", encoding="utf-8")
    written.append(config_path)

    dit_state = dit.state_dict()
    names = dit_diffusers_to_official(dit_state)
    itemsize = torch.empty((), dtype=dit_dtype).element_size()
    sizes = [(k, dit_state[k].numel() * (itemsize if dit_state[k].is_floating_point() else dit_state[k].element_size()))
             for k in dit_state]
    weight_map: dict[str, str] = {}
    total_size = 0
    groups = _split_shards(sizes, shards)
    for i, keys in enumerate(groups, start=1):
        name = dit_shard_name(i, len(groups))
        tensors = {names[k]: _cpu(dit_state[k], dit_dtype) for k in keys}
        total_size += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        del tensors
        weight_map.update({names[k]: name for k in keys})
        written.append(out / name)
    index_path = out / DIT_INDEX_FILE
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    index_path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    written.append(index_path)

    t5_names = t5_hf_to_official(t5.config.to_dict())
    t5_state = t5.state_dict()
    torch.save({t5_names[k]: _cpu(v, t5_dtype) for k, v in t5_state.items() if k not in T5_TIED_KEYS}, out / T5_FILE)
    written.append(out / T5_FILE)

    vae_names = vae_diffusers_to_official(vae.config)
    torch.save({vae_names[k]: _cpu(v, vae_dtype) for k, v in vae.state_dict().items()}, out / VAE_FILE)
    written.append(out / VAE_FILE)

    if tokenizer is not None:
        tok_dir = out / TOKENIZER_DIR
        tok_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(tok_dir))
        written.append(tok_dir)
    return written
