"""A byte-level CLIP BPE tokenizer at toy size, for the tiny presets (no download, real tokenizer class)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte-level alphabet."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def tiny_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>"), ("e", "r")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        merges_text = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n"
        (Path(tmp) / "merges.txt").write_text(merges_text, encoding="utf-8")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=77)


def tiny_t5_tokenizer() -> Any:
    """T5's real tokenizer class (a Unigram model, as `spiece.model`) over a toy vocabulary: the special
    tokens at T5's ids (pad 0, eos 1, unk 2), the word-start marker, lowercase letters with and without
    it, and a few words. Unknown characters map to <unk>, as in T5."""
    from transformers import T5Tokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = ["▁a", "▁the", "▁photo", "▁portrait", "▁of", "▁woman", "▁man", "▁blurry"]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(w, -3.0) for w in words]
    pieces += [("▁" + c, -6.0) for c in letters] + [(c, -5.0) for c in letters]
    return T5Tokenizer(vocab=pieces, extra_ids=0)
