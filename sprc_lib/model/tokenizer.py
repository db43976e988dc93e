"""Tokenizers: BLIP-2's (bert-base-uncased WordPiece + `[DEC]`) and a small one built from the toy captions.

Both are transformers `BertTokenizer`s, saved and loaded with `save_pretrained`/`from_pretrained`,
so the training and evaluation code never knows which one it holds.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import BertTokenizer

from sprc_lib.data.captions import clean_caption
from sprc_lib.errors import CheckpointError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BOS_TOKEN = "[DEC]"  # BLIP-2 adds it as the bos token; SPRC never uses it, but it fixes the vocabulary size


def _with_bos(tokenizer: BertTokenizer) -> BertTokenizer:
    if tokenizer.bos_token != BOS_TOKEN:
        tokenizer.add_special_tokens({"bos_token": BOS_TOKEN})
    return tokenizer


def build_word_vocab(captions: Iterable[str]) -> list[str]:
    """Special tokens, every word of the cleaned captions, then single characters as a fallback.

    The `##x` continuation pieces let WordPiece spell out a word it has never seen (a student's own
    modification text) instead of mapping it to [UNK].
    """
    words = sorted({w for c in captions for w in clean_caption(c).split()})
    chars = list(string.ascii_lowercase + string.digits)
    pieces = [*words, *[c for c in chars if c not in words], *[f"##{c}" for c in chars]]
    return SPECIAL_TOKENS + pieces


def make_word_tokenizer(captions: Iterable[str], out_dir: Path) -> BertTokenizer:
    """Build a tokenizer for these captions, save it to `out_dir` (vocab.txt and tokenizer files), load it back."""
    vocab = build_word_vocab(captions)
    tokenizer = _with_bos(BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True))
    tokenizer.save_pretrained(str(out_dir))
    (Path(out_dir) / "vocab.txt").write_text("\n".join([*vocab, BOS_TOKEN]) + "\n")  # for a person to read
    return load_tokenizer(out_dir)


def load_tokenizer(name_or_path: str | Path) -> BertTokenizer:
    """A saved tokenizer (this project's, or BLIP-2's such as `Salesforce/blip2-itm-vit-g`), with `[DEC]` added.

    A folder without one, or a hub id that cannot be fetched, is a CheckpointError naming it.
    """
    try:
        return _with_bos(BertTokenizer.from_pretrained(str(name_or_path), truncation_side="right"))
    except (OSError, ValueError) as err:
        where = "no such file or folder" if "/" in str(name_or_path) and not Path(name_or_path).exists() else (
            "no tokenizer there (vocab.txt, tokenizer_config.json)")
        raise CheckpointError(f"{name_or_path}: {where}; pass a model folder saved with its tokenizer, `tokenizer`, "
                              "or a hub id (fetched once, with the network)") from err


def tokenize(tokenizer: BertTokenizer, captions: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean captions as LAVIS does (`blip_caption`), then pad/truncate to `max_len` -> (ids, mask)."""
    batch = tokenizer(
        [clean_caption(c) for c in captions],
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
    )
    return batch["input_ids"], batch["attention_mask"]
