"""Perplexity against an independent float64 reference on a tiny random Llama."""

from __future__ import annotations

import math
import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fastawq.errors import FastAWQError
from fastawq.evaluate import Perplexity, perplexity, plan_windows

N_WORDS = 60
SPECIALS = ["[UNK]", "<s>", "</s>"]


def make_tokenizer(*, bos: bool = True, adds_bos: bool = False) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + [f"w{i}" for i in range(N_WORDS)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if adds_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    kwargs = {"bos_token": "<s>", "eos_token": "</s>"} if bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", **kwargs)


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(SPECIALS) + N_WORDS + 5,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    )
    m = LlamaForCausalLM(config)
    m.float()
    # random init gives near-uniform predictions; sharpen them so the test is not trivial
    with torch.no_grad():
        m.lm_head.weight.mul_(20.0)
    m.eval()
    return m


def corpus(n_words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < n_words:
        sentences.append(" ".join(f"w{rng.randrange(N_WORDS)}" for _ in range(rng.randrange(3, 12))))
    return sentences


def reference(
    model: LlamaForCausalLM, ids: list[int], window: int, stride: int, bos: int | None
) -> tuple[float, int, int]:
    """Token-by-token float64 sliding-window NLL, batch 1: (mean nll, n_tokens, n_windows)."""
    total, count, n_windows, prev_end = 0.0, 0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        inputs = ([bos] if bos is not None else []) + ids[begin:end]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([inputs])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        scored_here = 0
        for pos in range(max(begin, prev_end), end):
            k = pos - begin + (1 if bos is not None else 0)  # input index of text token pos
            if k == 0:
                continue  # no context to predict it from
            total -= float(logprobs[k - 1, inputs[k]])
            count += 1
            scored_here += 1
        n_windows += scored_here > 0
        prev_end = end
        if end == len(ids):
            break
    return total / count, count, n_windows


def token_ids(tok: PreTrainedTokenizerFast, texts: list[str]) -> list[int]:
    return list(tok.encode("\n\n".join(texts), add_special_tokens=False))


def assert_matches(result: Perplexity, ref: tuple[float, int, int]) -> None:
    nll, n_tokens, n_windows = ref
    assert result.n_tokens == n_tokens
    assert result.n_windows == n_windows
    assert result.nll == pytest.approx(nll, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(nll), rel=1e-5)


def test_non_overlapping_matches_reference(model: LlamaForCausalLM) -> None:
    tok = make_tokenizer()
    texts = corpus(300)
    ids = token_ids(tok, texts)
    assert len(ids) % 64 != 0  # exercise the short tail window
    result = perplexity(model, tok, texts, seq_len=64, batch_size=3)
    assert_matches(result, reference(model, ids, 64, 64, None))
    # without BOS the first token of each window has no context and is not scored
    assert result.n_tokens == len(ids) - result.n_windows
    assert 1.0 < result.ppl < 10_000


def test_batch_size_does_not_change_the_result(model: LlamaForCausalLM) -> None:
    tok = make_tokenizer()
    texts = corpus(300, seed=1)
    one = perplexity(model, tok, texts, seq_len=48, batch_size=1)
    many = perplexity(model, tok, texts, seq_len=48, batch_size=8)
    assert one.n_tokens == many.n_tokens and one.n_windows == many.n_windows
    assert one.nll == pytest.approx(many.nll, rel=1e-6)


@pytest.mark.parametrize("stride", [1, 7, 16, 31])
def test_sliding_stride_matches_reference(model: LlamaForCausalLM, stride: int) -> None:
    tok = make_tokenizer()
    texts = corpus(60 if stride < 4 else 150, seed=2)  # stride 1 runs one window per token
    ids = token_ids(tok, texts)
    result = perplexity(model, tok, texts, seq_len=32, stride=stride, batch_size=4)
    assert_matches(result, reference(model, ids, 32, stride, None))
    # overlapping windows score every token but the first exactly once
    assert result.n_tokens == len(ids) - 1


def test_sliding_window_sees_more_context(model: LlamaForCausalLM) -> None:
    tok = make_tokenizer()
    texts = corpus(200, seed=3)
    flat = perplexity(model, tok, texts, seq_len=32)
    sliding = perplexity(model, tok, texts, seq_len=32, stride=8)
    assert sliding.n_windows > flat.n_windows
    assert sliding.n_tokens > flat.n_tokens


def test_bos_prepended_matches_reference(model: LlamaForCausalLM) -> None:
    tok = make_tokenizer()
    texts = corpus(200, seed=4)
    ids = token_ids(tok, texts)
    result = perplexity(model, tok, texts, seq_len=33, add_bos=True)
    assert_matches(result, reference(model, ids, 32, 32, tok.bos_token_id))
    assert result.n_tokens == len(ids)  # with BOS every token is scored
    sliding = perplexity(model, tok, texts, seq_len=33, stride=10, add_bos=True)
    assert_matches(sliding, reference(model, ids, 32, 10, tok.bos_token_id))


def test_bos_auto_detection(model: LlamaForCausalLM) -> None:
    texts = corpus(120, seed=5)
    adds = make_tokenizer(adds_bos=True)  # Gemma-like: tokenizer("a") starts with BOS
    plain = make_tokenizer(adds_bos=False)  # SmolLM2-like: has a BOS token but does not add it
    no_bos = make_tokenizer(bos=False)
    assert adds("w1")["input_ids"][0] == adds.bos_token_id
    assert perplexity(model, adds, texts, seq_len=32) == perplexity(model, adds, texts, seq_len=32, add_bos=True)
    assert perplexity(model, plain, texts, seq_len=32) == perplexity(model, plain, texts, seq_len=32, add_bos=False)
    assert perplexity(model, no_bos, texts, seq_len=32) == perplexity(model, no_bos, texts, seq_len=32, add_bos=False)
    with pytest.raises(FastAWQError, match="no BOS token"):
        perplexity(model, no_bos, texts, seq_len=32, add_bos=True)


def test_text_is_tokenized_without_special_tokens(model: LlamaForCausalLM) -> None:
    tok = make_tokenizer(adds_bos=True)
    texts = corpus(100, seed=6)
    ids = token_ids(tok, texts)
    assert tok.bos_token_id not in ids
    result = perplexity(model, tok, texts, seq_len=32)
    assert_matches(result, reference(model, ids, 31, 31, tok.bos_token_id))


def test_string_equals_joined_list(model: LlamaForCausalLM) -> None:
    tok = make_tokenizer()
    texts = corpus(100, seed=7)
    assert perplexity(model, tok, texts, seq_len=32) == perplexity(model, tok, "\n\n".join(texts), seq_len=32)


def test_max_windows(model: LlamaForCausalLM) -> None:
    tok = make_tokenizer()
    texts = corpus(300, seed=8)
    ids = token_ids(tok, texts)
    result = perplexity(model, tok, texts, seq_len=32, max_windows=3)
    assert result.n_windows == 3
    assert_matches(result, reference(model, ids[: 3 * 32], 32, 32, None))


def test_training_mode_restored(model: LlamaForCausalLM) -> None:
    tok = make_tokenizer()
    model.train()
    try:
        perplexity(model, tok, corpus(50), seq_len=16)
        assert model.training
    finally:
        model.eval()


def test_errors(model: LlamaForCausalLM) -> None:
    tok = make_tokenizer()
    with pytest.raises(FastAWQError, match="too short"):
        perplexity(model, tok, "w1", seq_len=16)
    with pytest.raises(FastAWQError, match="stride"):
        perplexity(model, tok, corpus(50), seq_len=16, stride=17)
    with pytest.raises(FastAWQError, match="seq_len"):
        perplexity(model, tok, corpus(50), seq_len=1)
    with pytest.raises(FastAWQError, match="max_windows"):
        perplexity(model, tok, corpus(50), seq_len=16, max_windows=0)


def test_plan_windows() -> None:
    # 10 tokens, window 4, no overlap, no BOS: first token of each window unscored
    plan = plan_windows(10, 4, 4, with_bos=False)
    assert [(w.begin, w.end, w.n_scored) for w in plan] == [(0, 4, 3), (4, 8, 3), (8, 10, 1)]
    # with BOS every token is scored
    plan = plan_windows(10, 4, 4, with_bos=True)
    assert [(w.begin, w.end, w.n_scored) for w in plan] == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    # sliding: each window scores only what the previous one did not reach
    plan = plan_windows(10, 4, 2, with_bos=False)
    assert [(w.begin, w.end, w.n_scored) for w in plan] == [(0, 4, 3), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    assert sum(w.n_scored for w in plan) == 9
    # a trailing 1-token window has nothing to score without BOS
    assert [w.n_scored for w in plan_windows(9, 4, 4, with_bos=False)] == [3, 3]
