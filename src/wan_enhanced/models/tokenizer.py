"""Tokenizers: the one loader of a checkpoint's tokenizer folder, and a stand-in for random weights.

:func:`load_tokenizer` reads the tokenizer folder of either checkpoint layout. Random-weight runs need
no tokenizer files: random weights make token ids meaningless, but the text encoder must still run on
a realistic input: ``text_len`` positions with an attention mask, as the real umt5 tokenizer produces.
:class:`ByteTokenizer` maps UTF-8 bytes to ids (offset past the special tokens), appends EOS,
pads/truncates to ``max_length``. Reports say when it was used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError

PAD_ID, EOS_ID, OFFSET = 0, 1, 3


@dataclass
class TokenBatch:
    """What a Hugging Face tokenizer returns, reduced to the fields the pipeline uses."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


class ByteTokenizer:
    """UTF-8 byte tokenizer with umt5's special ids (pad 0, eos 1); ids stay below ``vocab_size``."""

    name = "byte-level stand-in tokenizer (random weights: no tokenizer files needed)"

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < OFFSET + 2:
            raise ValueError(f"vocab_size {vocab_size} too small for a byte tokenizer")
        self.vocab_size = vocab_size

    def __call__(self, texts: list[str] | str, *, max_length: int, **_: object) -> TokenBatch:
        """Tokenize to fixed ``max_length`` (padding='max_length', truncation=True semantics)."""
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.full((len(texts), max_length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        span = self.vocab_size - OFFSET
        for row, text in enumerate(texts):
            toks = [OFFSET + (b % span) for b in text.encode("utf-8")][: max_length - 1] + [EOS_ID]
            ids[row, : len(toks)] = torch.tensor(toks)
            mask[row, : len(toks)] = 1
        return TokenBatch(ids, mask)


def load_tokenizer(folder: str | os.PathLike[str]) -> Any:
    """``AutoTokenizer`` from a tokenizer folder of either layout (``tokenizer/``, ``google/umt5-xxl/``).

    A missing folder or one that cannot be loaded (no tokenizer file, broken JSON, ...) is a one-line
    WeightsError naming the folder. Random-weight runs need no folder: they use :class:`ByteTokenizer`.
    """
    path = Path(folder)
    if not path.is_dir():
        raise WeightsError(f"{path}: tokenizer folder not found")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - any library error: one line naming the folder
        raise WeightsError(" ".join(f"{path}: tokenizer could not be loaded ({type(exc).__name__}: {exc})".split())
                           ) from exc


def byte_level_hf_tokenizer(vocab_size: int) -> Any:
    """The byte stand-in as a Hugging Face fast tokenizer (``save_pretrained`` writes a real tokenizer folder).

    Same ids as ``ByteTokenizer`` for bytes below ``vocab_size - OFFSET`` (UTF-8 byte ``b`` → ``OFFSET + b``,
    EOS appended, pad 0): code that loads ``google/umt5-xxl`` with ``AutoTokenizer`` — ours with
    ``--weights official`` and the official Wan code — can then run a random official-layout checkpoint
    without the real umt5 tokenizer files, on prompts of the same token count.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if vocab_size < OFFSET + 256:
        raise ValueError(f"vocab_size {vocab_size} too small for a 256-symbol byte tokenizer")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_chars = sorted(alphabet, key=lambda c: _byte_of(c))
    vocab = {"<pad>": PAD_ID, "</s>": EOS_ID, "<unk>": 2}
    vocab.update({c: OFFSET + i for i, c in enumerate(byte_chars)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", EOS_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=1 << 20)


def _byte_of(char: str) -> int:
    """The byte a GPT-2 byte-level character stands for (the inverse of the byte → unicode table)."""
    code = ord(char)
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    if code in printable:
        return code
    others = [b for b in range(256) if b not in printable]
    return others[code - 256]
