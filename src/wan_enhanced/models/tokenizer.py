"""A stand-in tokenizer for random-weight runs, so no tokenizer files are needed.

Random weights make token ids meaningless, but the text encoder must still run on a realistic
input: ``text_len`` positions with an attention mask, as the real umt5 tokenizer produces. This
maps UTF-8 bytes to ids (offset past the special tokens), appends EOS, pads/truncates to
``max_length``. Reports say when it was used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
