from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Without an NVIDIA GPU the Triton kernels run in Triton's interpreter on CPU tensors. This must be
# set before triton is imported (it decides at decoration time).
if "TRITON_INTERPRET" not in os.environ and not Path("/dev/nvidia0").exists():
    os.environ["TRITON_INTERPRET"] = "1"

CHARS = "".join(chr(c) for c in range(32, 127)) + "\n"


def make_char_tokenizer() -> Any:
    """A character-level fast tokenizer (vocab < 320), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


@pytest.fixture(scope="session")
def char_tokenizer() -> Any:
    return make_char_tokenizer()


TEXTS = [f"Sample {i}: the quick brown fox jumps over the lazy dog while counting {i * 7} sheep." for i in range(40)]
