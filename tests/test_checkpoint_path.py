"""One checkpoint path: one layout detector, one load result, one tokenizer loader, WeightsError for every
weights problem, on tiny checkpoints of both layouts written here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_diffusers_layout import write_tiny_diffusers_ckpt

from wan_enhanced.config import detect_weights
from wan_enhanced.errors import UserError, WeightsError
from wan_enhanced.models.checkpoint import (
    CONFIG_FILE,
    DIT_INDEX_FILE,
    LAYOUT_FILES,
    T5_FILE,
    TOKENIZER_DIR,
    VAE_FILE,
    LoadResult,
    detect_layout,
    missing_files,
    tokenizer_dir,
)
from wan_enhanced.models.loading import ModelLoader
from wan_enhanced.models.official import dit_shard_name, write_official_checkpoint
from wan_enhanced.models.presets import TINY
from wan_enhanced.models.random_init import random_dit, random_t5, random_vae
from wan_enhanced.models.tokenizer import ByteTokenizer, byte_level_hf_tokenizer, load_tokenizer
from wan_enhanced.run import run_generation

CPU = torch.device("cpu")
DIFFUSERS_DIT = "transformer/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """A tiny checkpoint of each layout, written once (copy before damaging)."""
    base = tmp_path_factory.mktemp("ckpts")
    diffusers = base / "diffusers"
    diffusers.mkdir()
    write_tiny_diffusers_ckpt(diffusers)
    official = base / "official"
    write_official_checkpoint(official, random_dit(TINY, CPU), random_t5(TINY, CPU), random_vae(TINY, CPU),
                              tokenizer=byte_level_hf_tokenizer(TINY.t5["vocab_size"]), text_len=TINY.text_len)
    return {"diffusers": diffusers, "official": official}


def _copy(written: dict[str, Path], layout: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(written[layout], tmp_path / layout))


def _weights_error(fn, *needles: str) -> str:
    """``fn()`` raises one WeightsError line (a UserError: the CLI prints ``error: ...``, exit 2) naming each needle."""
    with pytest.raises(WeightsError) as info:
        fn()
    msg = str(info.value)
    assert isinstance(info.value, UserError) and info.value.exit_code == 2
    assert "\n" not in msg and msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# ------------------------------------------------------------------------------------------ detector


@pytest.mark.parametrize("layout", ["diffusers", "official"])
def test_detects_each_layout(written, layout) -> None:
    root = written[layout]
    assert missing_files(root, layout) == []
    assert detect_layout(root) == layout
    assert detect_layout(str(root), layout) == layout
    assert detect_weights(str(root), "auto") == (layout, f"{layout} checkpoint from {root}")
    assert detect_weights(str(root), layout)[0] == layout


def test_asking_for_the_other_layout_names_its_first_missing_file(written) -> None:
    msg = _weights_error(lambda: detect_layout(written["diffusers"], "official"))
    assert msg == f"--ckpt_dir {written['diffusers']}: missing {CONFIG_FILE} (needed for --weights official)"
    msg = _weights_error(lambda: detect_weights(str(written["official"]), "diffusers"))
    assert msg == f"--ckpt_dir {written['official']}: missing transformer/config.json (needed for --weights diffusers)"


def test_empty_dir_is_neither_layout(tmp_path) -> None:
    msg = _weights_error(lambda: detect_layout(tmp_path))
    assert msg == (f"--ckpt_dir {tmp_path}: neither a diffusers layout (needs transformer/config.json, "
                   f"vae/config.json, text_encoder/config.json, tokenizer) nor an official layout (needs "
                   f"{CONFIG_FILE}, {DIT_INDEX_FILE}, {T5_FILE}, {VAE_FILE}, {TOKENIZER_DIR})")
    assert missing_files(tmp_path, "diffusers") == [name for name, _ in LAYOUT_FILES["diffusers"]]


def test_not_a_directory(tmp_path) -> None:
    _weights_error(lambda: detect_layout(tmp_path / "nowhere"), f"--ckpt_dir: '{tmp_path / 'nowhere'}' does not exist")
    (tmp_path / "afile").write_text("x")
    _weights_error(lambda: detect_layout(tmp_path / "afile"), "is not a directory")


@pytest.mark.parametrize("present,missing,layout", [
    (["transformer/config.json"], "vae/config.json", "diffusers"),
    (["model_index.json"], "transformer/config.json", "diffusers"),
    (["transformer/config.json", "vae/config.json", "text_encoder/config.json"], "tokenizer", "diffusers"),
    ([CONFIG_FILE], DIT_INDEX_FILE, "official"),
    ([VAE_FILE], CONFIG_FILE, "official"),
    ([CONFIG_FILE, DIT_INDEX_FILE, T5_FILE, VAE_FILE], TOKENIZER_DIR, "official"),
])
def test_partial_dir_names_the_missing_file(tmp_path, present, missing, layout) -> None:
    for name in present:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    msg = _weights_error(lambda: detect_layout(tmp_path))
    assert msg == f"--ckpt_dir {tmp_path}: missing {missing} (needed for --weights {layout})"


def test_a_file_where_a_folder_belongs_is_missing(tmp_path, written) -> None:
    root = _copy(written, "official", tmp_path)
    shutil.rmtree(root / TOKENIZER_DIR)
    (root / TOKENIZER_DIR).write_text("not a folder")
    assert missing_files(root, "official") == [TOKENIZER_DIR]


def test_the_config_layer_raises_the_same_weights_error(tiny_cfg, tmp_path) -> None:
    _weights_error(lambda: tiny_cfg(ckpt_dir=str(tmp_path)), "neither a diffusers layout")
    _weights_error(lambda: tiny_cfg(ckpt_dir=str(tmp_path), weights="official"), f"missing {CONFIG_FILE}")


# ------------------------------------------------------------------------------ every failure class


def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 64)


def _reshape_first(path: Path) -> str:
    tensors = load_file(str(path))
    key = sorted(k for k, v in tensors.items() if v.ndim == 2)[0]
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])
    save_file(tensors, str(path))
    return key


def _official_shard(root: Path, key: str) -> Path:
    return root / json.loads((root / DIT_INDEX_FILE).read_text())["weight_map"][key]


def _break_tokenizer_json(folder: Path) -> None:
    (folder / "tokenizer.json").write_text('{"version": "1.0", broken')


# (layout, model to load, damage(root) -> text the error must name)
FAILURES = {
    "missing shard": ("official", "dit",
                      lambda r: (r / dit_shard_name(2, 3)).unlink() or dit_shard_name(2, 3)),
    "missing diffusers weight file": ("diffusers", "dit",
                                      lambda r: (r / DIFFUSERS_DIT).unlink() or "no weight file"),
    "missing .pth": ("official", "vae", lambda r: (r / VAE_FILE).unlink() or VAE_FILE),
    "truncated safetensors (official)": ("official", "dit",
                                         lambda r: _truncate(r / dit_shard_name(1, 3)) or dit_shard_name(1, 3)),
    "truncated safetensors (diffusers)": ("diffusers", "dit", lambda r: _truncate(r / DIFFUSERS_DIT) or "transformer"),
    "truncated .pth": ("official", "text_encoder", lambda r: _truncate(r / T5_FILE) or T5_FILE),
    "wrong shape (official)": ("official", "dit",
                               lambda r: _reshape_first(_official_shard(r, "blocks.1.ffn.0.weight"))),
    "wrong shape (diffusers)": ("diffusers", "dit", lambda r: _reshape_first(r / DIFFUSERS_DIT)),
    "bad key (official)": ("official", "dit", lambda r: _add_key(_official_shard(r, "head.modulation"))),
    "bad key (diffusers)": ("diffusers", "dit", lambda r: _add_key(r / DIFFUSERS_DIT)),
    "missing tokenizer folder (official)": ("official", "text_encoder",
                                            lambda r: shutil.rmtree(r / TOKENIZER_DIR) or "tokenizer folder not found"),
    "missing tokenizer folder (diffusers)": ("diffusers", "text_encoder",
                                             lambda r: shutil.rmtree(r / "tokenizer") or "tokenizer folder not found"),
    "broken tokenizer json (official)": ("official", "text_encoder",
                                         lambda r: _break_tokenizer_json(r / TOKENIZER_DIR) or "could not be loaded"),
    "broken tokenizer json (diffusers)": ("diffusers", "text_encoder",
                                          lambda r: _break_tokenizer_json(r / "tokenizer") or "could not be loaded"),
    "config mismatch (official)": ("official", "dit", lambda r: _edit_config(r / CONFIG_FILE) or "'num_layers'"),
}


def _add_key(path: Path) -> str:
    tensors = load_file(str(path))
    tensors["blocks.9.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(path))
    return "blocks.9.extra.weight"


def _edit_config(path: Path) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), "num_layers": 30}))


@pytest.mark.parametrize("case", list(FAILURES))
def test_every_weights_failure_is_a_weights_error(written, tmp_path, case) -> None:
    layout, model, damage = FAILURES[case]
    root = _copy(written, layout, tmp_path)
    needle = damage(root)
    loader = ModelLoader(TINY, layout, str(root))
    _weights_error(lambda: getattr(loader, model)(CPU), needle)


def test_tokenizer_loader_reads_both_layouts(written) -> None:
    official = load_tokenizer(tokenizer_dir(written["official"], "official"))
    assert official("ab").input_ids == [3 + ord("a"), 3 + ord("b"), 1]  # the byte-level stand-in's ids, EOS
    diffusers = load_tokenizer(tokenizer_dir(written["diffusers"], "diffusers"))
    assert diffusers("a cat").input_ids[:2] == [3, 4]


def test_loader_rejects_an_unknown_kind_or_no_dir() -> None:
    _weights_error(lambda: ModelLoader(TINY, "safetensors", "/x"), "'safetensors'", "random, diffusers, official")
    _weights_error(lambda: ModelLoader(TINY, "official", None), "--weights official needs --ckpt_dir")


# ------------------------------------------------------------------------------------- load result


def test_random_load_result() -> None:
    loader = ModelLoader(TINY, "random", None)
    _, tok, res = loader.text_encoder(CPU)
    assert isinstance(tok, ByteTokenizer)
    assert isinstance(res, LoadResult)
    assert (res.model, res.kind, res.layout, res.files, res.bytes_read, res.gb_per_s) == (
        "text_encoder", "random", None, [], 0, None)
    assert res.seconds > 0
    assert [loader.dit(CPU)[1].model, loader.vae(CPU)[1].model] == ["dit", "vae"]


@pytest.mark.parametrize("layout", ["diffusers", "official"])
def test_checkpoint_load_results(written, layout) -> None:
    root = written[layout]
    loader = ModelLoader(TINY, layout, str(root))
    expected_files = {
        "diffusers": {"text_encoder": ["text_encoder/model.safetensors"], "dit": [DIFFUSERS_DIT],
                      "vae": ["vae/diffusion_pytorch_model.safetensors"]},
        "official": {"text_encoder": [T5_FILE], "dit": [dit_shard_name(i, 3) for i in (1, 2, 3)],
                     "vae": [VAE_FILE]},
    }[layout]
    results = [loader.text_encoder(CPU)[2], loader.dit(CPU)[1], loader.vae(CPU)[1]]
    for res in results:
        assert isinstance(res, LoadResult) and res.kind == layout and res.layout == layout
        assert res.files == [str(root / f) for f in expected_files[res.model]]
        assert res.bytes_read == sum(Path(f).stat().st_size for f in res.files) > 0
        assert res.seconds > 0 and res.gb_per_s == pytest.approx(res.bytes_read / 1e9 / res.seconds)
    assert [r.model for r in results] == ["text_encoder", "dit", "vae"]


def test_report_load_entries_keep_their_keys(tiny_cfg, tmp_path, written) -> None:
    """The report's ``weights.load`` is built from the load results: same keys, in stage order."""
    for weights, ckpt in (("random", None), ("official", str(written["official"]))):
        report_file = tmp_path / f"{weights}.json"
        out = run_generation(tiny_cfg(weights=weights, ckpt_dir=ckpt, report_file=str(report_file)), progress=False)
        assert out.exit_code == 0, out.message
        load = json.loads(report_file.read_text())["weights"]["load"]
        assert [e["model"] for e in load] == ["text_encoder", "vae", "dit"]
        for entry in load:
            assert set(entry) == {"model", "seconds", "bytes_read", "gb_per_s", "files"}
            assert entry["seconds"] > 0
            if weights == "random":
                assert (entry["bytes_read"], entry["gb_per_s"], entry["files"]) == (0, None, [])
            else:
                assert entry["bytes_read"] > 0 and entry["gb_per_s"] > 0 and entry["files"]
