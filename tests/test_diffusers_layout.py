"""A diffusers-layout checkpoint (save_pretrained of tiny modules) loads back into identical modules;
a missing file or key is an error naming it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from wan_enhanced.errors import WeightsError
from wan_enhanced.models.checkpoint import LoadResult
from wan_enhanced.models.loading import ModelLoader
from wan_enhanced.models.presets import TINY
from wan_enhanced.models.random_init import random_dit, random_t5, random_vae
from wan_enhanced.pipeline import TI2VPipeline

CPU = torch.device("cpu")


def write_tiny_diffusers_ckpt(root):
    """save_pretrained of tiny random modules + a small word-level tokenizer, diffusers layout."""
    dit, vae, t5 = random_dit(TINY, CPU), random_vae(TINY, CPU), random_t5(TINY, CPU)
    dit.save_pretrained(root / "transformer")
    vae.save_pretrained(root / "vae")
    t5.save_pretrained(root / "text_encoder")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate("a cat dog runs on stage".split())}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(root / "tokenizer")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    return dit, vae, t5


def _same(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def test_roundtrip_identical_modules(tmp_path):
    dit, vae, t5 = write_tiny_diffusers_ckpt(tmp_path)
    loader = ModelLoader(TINY, "diffusers", str(tmp_path))
    dit2, info = loader.dit(CPU)
    _same(dit, dit2)
    assert info.bytes_read > 0 and info.files
    assert isinstance(info, LoadResult) and (info.model, info.kind, info.layout) == ("dit", "diffusers", "diffusers")
    vae2, _ = loader.vae(CPU)
    _same(vae, vae2)
    t52, tok, _ = loader.text_encoder(CPU)
    _same(t5, t52)
    assert tok("a cat", max_length=8, padding="max_length", truncation=True, return_tensors="pt").input_ids.shape[-1] == 8
    # rope tables are non-persistent: must equal a freshly built model's
    assert torch.equal(dit2.rope.freqs_cos, dit.rope.freqs_cos)


def test_pipeline_runs_from_diffusers_ckpt(tiny_cfg, tmp_path):
    write_tiny_diffusers_ckpt(tmp_path)
    cfg = tiny_cfg(ckpt_dir=str(tmp_path))  # weights auto → diffusers
    assert cfg.resolved_weights == "diffusers"
    res = TI2VPipeline(cfg, progress=False).generate()
    assert res.frames.shape == (9, 64, 64, 3)
    assert {i.kind for i in res.load_info} == {"diffusers"}


def test_missing_key_is_an_error_naming_it(tmp_path):
    write_tiny_diffusers_ckpt(tmp_path)
    f = tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(f)
    sd.pop("blocks.1.ffn.net.2.weight")
    save_file(sd, f)
    with pytest.raises(WeightsError, match=r"missing key blocks\.1\.ffn\.net\.2\.weight"):
        ModelLoader(TINY, "diffusers", str(tmp_path)).dit(CPU)


def test_extra_key_and_missing_file_are_errors(tmp_path):
    write_tiny_diffusers_ckpt(tmp_path)
    f = tmp_path / "text_encoder" / "model.safetensors"
    sd = load_file(f)
    sd["encoder.block.9.extra.weight"] = torch.zeros(2)
    save_file(sd, f)
    with pytest.raises(WeightsError, match=r"unexpected key encoder\.block\.9\.extra\.weight"):
        ModelLoader(TINY, "diffusers", str(tmp_path)).text_encoder(CPU)
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"vae: no weight file"):
        ModelLoader(TINY, "diffusers", str(tmp_path)).vae(CPU)
