"""Official-layout checkpoints: write tiny random models, load them back, and reject bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from wan_enhanced.errors import UserError, WeightsError
from wan_enhanced.models.checkpoint import (
    CONFIG_FILE,
    DIT_INDEX_FILE,
    T5_FILE,
    TOKENIZER_DIR,
    VAE_FILE,
    LoadResult,
    detect_layout,
    missing_files,
    tokenizer_dir,
)
from wan_enhanced.models.official import (
    dit_shard_name,
    load_official_dit,
    load_official_t5,
    load_official_vae,
    write_official_checkpoint,
)
from wan_enhanced.models.official_keys import dit_diffusers_to_official
from wan_enhanced.models.presets import TINY
from wan_enhanced.models.random_init import random_dit, random_t5, random_vae
from wan_enhanced.models.tokenizer import load_tokenizer

CPU = torch.device("cpu")
SHARDS = [dit_shard_name(i, 3) for i in (1, 2, 3)]


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, torch.nn.Module]:
    return {"dit": random_dit(TINY, CPU), "t5": random_t5(TINY, CPU), "vae": random_vae(TINY, CPU)}


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_models) -> Path:
    out = tmp_path_factory.mktemp("official") / "ckpt"
    write_official_checkpoint(out, tiny_models["dit"], tiny_models["t5"], tiny_models["vae"],
                              tokenizer=_tiny_tokenizer(), text_len=TINY.text_len)
    return out


@pytest.fixture
def ckpt(written, tmp_path) -> Path:
    """A private copy of the written checkpoint, free to damage."""
    return Path(shutil.copytree(written, tmp_path / "ckpt"))


def _assert_same_state(loaded: torch.nn.Module, ref: torch.nn.Module) -> None:
    a, b = loaded.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].device == b[key].device, key
        assert torch.equal(a[key], b[key]), key


def _raises_one_line(fn, *needles: str) -> str:
    with pytest.raises(WeightsError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert isinstance(info.value, UserError)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------- layout


def test_writer_makes_the_official_layout(written, tiny_models) -> None:
    assert missing_files(written, "official") == [] and detect_layout(written) == "official"
    for name in (CONFIG_FILE, DIT_INDEX_FILE, T5_FILE, VAE_FILE, *SHARDS):
        assert (written / name).is_file(), name
    config = json.loads((written / CONFIG_FILE).read_text())
    assert config["_class_name"] == "WanModel" and config["model_type"] == "ti2v"
    assert (config["dim"], config["num_layers"], config["in_dim"]) == (48, 2, 8)
    index = json.loads((written / DIT_INDEX_FILE).read_text())
    official_names = set(dit_diffusers_to_official(tiny_models["dit"].state_dict()).values())
    assert set(index["weight_map"]) == official_names
    assert sorted(set(index["weight_map"].values())) == SHARDS
    stored: dict[str, torch.dtype] = {}
    for shard in SHARDS:
        with safe_open(str(written / shard), framework="pt") as f:
            stored.update({k: f.get_tensor(k).dtype for k in f.keys()})
    assert set(stored) == official_names and set(stored.values()) == {torch.float32}  # DiT stored fp32
    t5 = torch.load(written / T5_FILE, weights_only=True)
    assert "token_embedding.weight" in t5 and {v.dtype for v in t5.values()} == {torch.bfloat16}
    vae = torch.load(written / VAE_FILE, weights_only=True)
    assert "encoder.conv1.weight" in vae and {v.dtype for v in vae.values()} == {torch.float32}


def test_detect_lists_missing_files(tmp_path, ckpt) -> None:
    assert missing_files(tmp_path / "nowhere", "official") == [CONFIG_FILE, DIT_INDEX_FILE, T5_FILE, VAE_FILE,
                                                               TOKENIZER_DIR]
    (ckpt / SHARDS[1]).unlink()  # a shard is the DiT loader's to name (test_missing_shard), not the layout's
    (ckpt / VAE_FILE).unlink()
    shutil.rmtree(ckpt / TOKENIZER_DIR)
    assert missing_files(ckpt, "official") == [VAE_FILE, TOKENIZER_DIR]
    msg = _raises_one_line(lambda: detect_layout(ckpt), str(ckpt))
    assert msg == f"--ckpt_dir {ckpt}: missing {VAE_FILE} (needed for --weights official)"


# ------------------------------------------------------------------------------------ round trip


def test_dit_round_trip(written, tiny_models) -> None:
    ref = tiny_models["dit"]
    model, stats = load_official_dit(written, TINY, CPU, torch.bfloat16)
    _assert_same_state(model, ref)
    fp32 = {n for n, p in model.named_parameters() if p.dtype == torch.float32}
    assert fp32 and all(any(m in n.split(".") for m in model._keep_in_fp32_modules) for n in fp32)
    assert {p.dtype for n, p in model.named_parameters() if n not in fp32} == {torch.bfloat16}
    fresh = WanRotaryPosEmbed(TINY.dit["attention_head_dim"], TINY.dit["patch_size"], 1024)
    assert torch.equal(model.rope.freqs_cos, fresh.freqs_cos) and torch.equal(model.rope.freqs_sin, fresh.freqs_sin)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.randn(1, 8, 3, 8, 8, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 5, TINY.dit["text_dim"], dtype=torch.bfloat16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500])
    with torch.no_grad():
        assert torch.equal(model(x, t, ctx).sample, ref(x, t, ctx).sample)
    assert isinstance(stats, LoadResult) and stats.model == "dit"
    assert (stats.kind, stats.layout) == ("official", "official")
    assert stats.files == [str(written / s) for s in SHARDS]
    assert stats.bytes_read == sum((written / s).stat().st_size for s in SHARDS)
    assert stats.seconds > 0 and stats.gb_per_s == pytest.approx(stats.bytes_read / 1e9 / stats.seconds)


def test_t5_round_trip(written, tiny_models) -> None:
    model, stats = load_official_t5(written, TINY, CPU, torch.bfloat16)
    _assert_same_state(model, tiny_models["t5"])
    assert model.encoder.embed_tokens.weight is model.shared.weight  # still tied
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.tensor([[5, 9, 1, 0]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).last_hidden_state, tiny_models["t5"](input_ids=ids).last_hidden_state)
    assert stats.files == [str(written / T5_FILE)] and stats.bytes_read == (written / T5_FILE).stat().st_size
    assert isinstance(stats, LoadResult) and stats.model == "text_encoder" and stats.kind == "official"


def test_vae_round_trip(written, tiny_models) -> None:
    model, stats = load_official_vae(written, TINY, CPU)
    _assert_same_state(model, tiny_models["vae"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert list(model.config.latents_mean) == TINY.vae["latents_mean"]
    assert stats.model == "vae" and stats.bytes_read == (written / VAE_FILE).stat().st_size


def test_t5_fp16_keeps_wo_in_fp32(written) -> None:
    model, _ = load_official_t5(written, TINY, CPU, torch.float16)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if n.endswith(".wo.weight"))
    assert all(d == torch.float16 for n, d in dtypes.items() if not n.endswith(".wo.weight"))


def test_tokenizer_round_trip(written) -> None:
    tok = load_tokenizer(tokenizer_dir(written, "official"))
    assert tok("a cat").input_ids[:2] == [3, 4]


# ------------------------------------------------------------------------------------- bad input


def test_truncated_shard(ckpt) -> None:
    shard = ckpt / SHARDS[0]
    with shard.open("r+b") as f:
        f.truncate(shard.stat().st_size - 64)
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), SHARDS[0])


def test_garbage_shard(ckpt) -> None:
    (ckpt / SHARDS[2]).write_bytes(b"\x00not a safetensors file")
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), SHARDS[2])


def test_missing_shard(ckpt) -> None:
    (ckpt / SHARDS[1]).unlink()
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), SHARDS[1], "not found")


def _edit_shard(ckpt: Path, name: str, fn) -> None:
    tensors = load_file(str(ckpt / name))
    fn(tensors)
    save_file(tensors, str(ckpt / name))


def test_dit_wrong_shape(ckpt) -> None:
    key = "blocks.1.ffn.0.weight"
    shard = json.loads((ckpt / DIT_INDEX_FILE).read_text())["weight_map"][key]
    _edit_shard(ckpt, shard, lambda t: t.update({key: torch.zeros(65, 48)}))
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), shard, key, "[65, 48]", "[64, 48]")


def test_dit_key_missing_from_shard(ckpt) -> None:
    key = "blocks.0.cross_attn.norm_k.weight"
    shard = json.loads((ckpt / DIT_INDEX_FILE).read_text())["weight_map"][key]
    _edit_shard(ckpt, shard, lambda t: t.pop(key))
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), shard, key, "missing key")


def test_dit_key_missing_everywhere(ckpt) -> None:
    key = "head.modulation"
    index_path = ckpt / DIT_INDEX_FILE
    index = json.loads(index_path.read_text())
    shard = index["weight_map"].pop(key)
    index_path.write_text(json.dumps(index))
    _edit_shard(ckpt, shard, lambda t: t.pop(key))
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), DIT_INDEX_FILE, key, "missing key")


def test_dit_extra_key(ckpt) -> None:
    _edit_shard(ckpt, SHARDS[2], lambda t: t.update({"blocks.7.self_attn.q.weight": torch.zeros(2)}))
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), SHARDS[2], "blocks.7.self_attn.q.weight",
                     "unexpected key")


def test_dit_duplicate_key(ckpt) -> None:
    key = "patch_embedding.bias"
    index = json.loads((ckpt / DIT_INDEX_FILE).read_text())["weight_map"]
    other = next(s for s in SHARDS if s != index[key])
    _edit_shard(ckpt, other, lambda t: t.update({key: torch.zeros(48)}))
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), key, "duplicate key")


def test_config_mismatch(ckpt) -> None:
    path = ckpt / CONFIG_FILE
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "num_layers": 30}))
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), CONFIG_FILE, "'num_layers'", "30")
    del config["dim"]
    path.write_text(json.dumps(config))
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), CONFIG_FILE, "'dim'", "missing")
    path.write_text("{not json")
    _raises_one_line(lambda: load_official_dit(ckpt, TINY, CPU), CONFIG_FILE)


def _edit_pth(path: Path, fn) -> None:
    state = torch.load(path, weights_only=True)
    torch.save(fn(state), path)


def test_t5_missing_key(ckpt) -> None:
    _edit_pth(ckpt / T5_FILE, lambda s: {k: v for k, v in s.items() if k != "blocks.1.ffn.fc1.weight"})
    _raises_one_line(lambda: load_official_t5(ckpt, TINY, CPU), T5_FILE, "blocks.1.ffn.fc1.weight", "missing key")


def test_t5_wrong_shape(ckpt) -> None:
    _edit_pth(ckpt / T5_FILE, lambda s: {**s, "blocks.0.pos_embedding.embedding.weight": torch.zeros(4, 32)})
    _raises_one_line(lambda: load_official_t5(ckpt, TINY, CPU), T5_FILE, "blocks.0.pos_embedding.embedding.weight",
                     "[4, 32]", "[32, 4]")


def test_vae_extra_key(ckpt) -> None:
    _edit_pth(ckpt / VAE_FILE, lambda s: {**s, "decoder.head.9.gamma": torch.ones(3)})
    _raises_one_line(lambda: load_official_vae(ckpt, TINY, CPU), VAE_FILE, "decoder.head.9.gamma", "unexpected key")


def test_vae_wrong_shape(ckpt) -> None:
    key = "encoder.middle.1.norm.gamma"
    _edit_pth(ckpt / VAE_FILE, lambda s: {**s, key: s[key].reshape(-1)})
    _raises_one_line(lambda: load_official_vae(ckpt, TINY, CPU), VAE_FILE, key, "shape")


@pytest.mark.parametrize("payload", [
    [torch.zeros(2)],
    {"model": {"encoder.conv1.weight": torch.zeros(1)}},
    {"encoder.conv1.weight": 3},
])
def test_pth_not_a_state_dict(ckpt, payload) -> None:
    torch.save(payload, ckpt / VAE_FILE)
    _raises_one_line(lambda: load_official_vae(ckpt, TINY, CPU), VAE_FILE, "not a state dict")


def test_pth_unreadable(ckpt) -> None:
    (ckpt / T5_FILE).write_bytes(b"garbage" * 10)
    _raises_one_line(lambda: load_official_t5(ckpt, TINY, CPU), T5_FILE, "cannot read")
    path = ckpt / VAE_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated zip
    _raises_one_line(lambda: load_official_vae(ckpt, TINY, CPU), VAE_FILE, "cannot read")
    (ckpt / VAE_FILE).unlink()
    _raises_one_line(lambda: load_official_vae(ckpt, TINY, CPU), VAE_FILE, "not found")


def test_tokenizer_missing(ckpt) -> None:
    shutil.rmtree(ckpt / TOKENIZER_DIR)
    msg = _raises_one_line(lambda: load_tokenizer(tokenizer_dir(ckpt, "official")), TOKENIZER_DIR)
    assert msg == f"{ckpt / TOKENIZER_DIR}: tokenizer folder not found"


def test_wrong_preset_shape_message_names_both_shapes(written) -> None:
    """Loading the tiny files with a wider preset fails on the first mismatched key, with both shapes."""
    from dataclasses import replace

    wider = replace(TINY, vae={**TINY.vae, "base_dim": 16})
    msg = _raises_one_line(lambda: load_official_vae(written, wider, CPU), VAE_FILE, "encoder.conv1.weight")
    assert "[8, 12, 3, 3, 3]" in msg and "[16, 12, 3, 3, 3]" in msg
