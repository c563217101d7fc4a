"""Tiny random models of each supported architecture, built from configs (no downloads)."""

from __future__ import annotations

from typing import Any

import torch

# hidden 128 / intermediate 256 keep every group size (32, 64, 128) valid
_COMMON: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    vocab_size=320,
    max_position_embeddings=256,
)

ARCHS: dict[str, dict[str, Any]] = {
    "llama": dict(num_key_value_heads=2),  # grouped-query attention: v→o skipped
    "llama_mha": dict(num_key_value_heads=4),  # multi-head attention: v→o discovered
    "mistral": dict(num_key_value_heads=2, sliding_window=None),
    "qwen2": dict(num_key_value_heads=2),  # q/k/v biases
    "qwen3": dict(num_key_value_heads=2, head_dim=32),  # q/k norms
}


def make_model(arch: str, seed: int = 0, tie: bool = False, dtype: torch.dtype = torch.float32) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type = arch.split("_")[0]
    cfg = AutoConfig.for_model(model_type, **_COMMON, **ARCHS[arch], tie_word_embeddings=tie)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    # random init draws weights with std 0.02 and norms at 1: spread the norms and give the
    # activations per-channel outliers, as trained models have, so AWQ has something to find
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.5 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.02 * torch.randn_like(p))
        emb = model.get_input_embeddings().weight
        emb.mul_(1.0 + 4.0 * (torch.rand(emb.shape[1]) < 0.05).float())
    return model.eval()


def calib_ids(n: int = 6, seq: int = 64, vocab: int = 320, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, seq), generator=g)
