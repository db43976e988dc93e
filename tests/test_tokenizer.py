"""Tokenizers: the toy word vocabulary and BLIP-2's layout ([DEC] as bos), saved and loaded back."""

from __future__ import annotations

import torch
from transformers import BertTokenizer

from sprc_lib.model.loading import load_model, new_model
from sprc_lib.model.tokenizer import BOS_TOKEN, SPECIAL_TOKENS, load_tokenizer, make_word_tokenizer, tokenize

CAPTIONS = ["Make the circle BLUE and move it left.", "has shorter sleeves", "is red with stripes!"]


def test_word_vocab_from_captions(tmp_path):
    tok = make_word_tokenizer(CAPTIONS, tmp_path / "tok")
    vocab = (tmp_path / "tok" / "vocab.txt").read_text().split()
    assert vocab[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    for word in ("circle", "blue", "sleeves", "stripes"):
        assert word in vocab
    assert tok.pad_token_id == 0 and tok.cls_token == "[CLS]" and tok.sep_token == "[SEP]"
    assert tok.bos_token == BOS_TOKEN and tok.convert_tokens_to_ids(BOS_TOKEN) == len(tok) - 1


def test_tokenize_cleans_pads_and_truncates(tmp_path):
    tok = make_word_tokenizer(CAPTIONS, tmp_path / "tok")
    ids, mask = tokenize(tok, ["Make the circle BLUE!!", "move it left " * 10], max_len=8)
    assert ids.shape == mask.shape == (2, 8)
    words = tok.convert_ids_to_tokens(ids[0][mask[0].bool()].tolist())
    assert words == ["[CLS]", "make", "the", "circle", "blue", "[SEP]"]
    assert mask[0].tolist() == [1] * 6 + [0] * 2 and ids[0, 6:].tolist() == [0, 0]
    assert mask[1].all() and tok.convert_ids_to_tokens(int(ids[1, -1])) == "[SEP]"


def test_unknown_words_are_spelled_not_lost(tmp_path):
    tok = make_word_tokenizer(CAPTIONS, tmp_path / "tok")
    ids, mask = tokenize(tok, ["zebra"], max_len=10)
    pieces = tok.convert_ids_to_tokens(ids[0][mask[0].bool()].tolist())
    assert "[UNK]" not in pieces and "".join(p.removeprefix("##") for p in pieces[1:-1]) == "zebra"


def test_save_and_load_model_and_tokenizer(tmp_path):
    """The offline stand-in for `from_pretrained` on the hub: a tiny model and tokenizer written and read back."""
    tok = make_word_tokenizer(CAPTIONS, tmp_path / "tok")
    model = new_model("tiny", vocab_size=len(tok), seed=3).eval()
    model.save_pretrained(tmp_path / "saved")
    tok.save_pretrained(tmp_path / "saved")
    back_tok = load_tokenizer(tmp_path / "saved")
    assert isinstance(back_tok, BertTokenizer) and back_tok.get_vocab() == tok.get_vocab()
    back = load_model(tmp_path / "saved").eval()
    ids, mask = tokenize(back_tok, CAPTIONS, max_len=model.config.max_txt_len)
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a = model.composed_features(model.encode_image(pixels), ids, mask)
        b = back.composed_features(back.encode_image(pixels), ids, mask)
    assert torch.equal(a, b)
    assert all(not p.requires_grad for p in back.vit_parameters())
