"""Scaling-group discovery and the folding invariant, on tiny random models of every architecture."""

from __future__ import annotations

import copy

import pytest
import torch

from fastawq import AWQConfig
from fastawq.arch import arch_spec, discover_layer, find_decoder_layers
from fastawq.arch.discover import LayerCall
from fastawq.arch.fold import PrevKind
from fastawq.pipeline import capture_inputs, quantize_model

from tiny_models import ARCHS, calib_ids, make_model


def _plan(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    spec = arch_spec(model.config.model_type)
    _, layers = find_decoder_layers(model, spec)
    chunks = capture_inputs(model, layers, calib_ids(2, 32), torch.device("cpu"), 2, torch.device("cpu"))
    kwargs = chunks[0].kwargs[getattr(layers[0], "attention_type", None)]
    return discover_layer(layers[0], LayerCall((chunks[0].hidden,), kwargs), spec)


def _groups(plan) -> set[tuple[str, tuple[str, ...]]]:  # type: ignore[no-untyped-def]
    return {(g.prev, g.linears) for g in plan.groups}


LLAMA_GROUPS = {
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    ("mlp.up_proj", ("mlp.down_proj",)),
}


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3"])
def test_discovers_llama_family_groups_with_gqa(arch: str) -> None:
    plan = _plan(make_model(arch))
    assert _groups(plan) == LLAMA_GROUPS  # GQA: v_proj (256→64) cannot scale o_proj
    assert plan.ungrouped == ("self_attn.o_proj",)
    assert {g.inspect for g in plan.groups} == {"self_attn", "mlp", "mlp.down_proj"}
    assert all(g.kind is (PrevKind.LINEAR if g.prev == "mlp.up_proj" else PrevKind.NORM) for g in plan.groups)


def test_discovers_v_to_o_with_multi_head_attention() -> None:
    plan = _plan(make_model("llama_mha"))
    assert _groups(plan) == LLAMA_GROUPS | {("self_attn.v_proj", ("self_attn.o_proj",))}
    assert plan.ungrouped == ()


def test_gemma_norm_fold_rule_is_detected() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        "gemma",
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=320,
    )
    torch.manual_seed(0)
    plan = _plan(AutoModelForCausalLM.from_config(cfg).eval())
    kinds = {g.prev: g.kind for g in plan.groups}
    assert kinds["input_layernorm"] is PrevKind.NORM_PLUS_ONE
    assert kinds["post_attention_layernorm"] is PrevKind.NORM_PLUS_ONE


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_folding_scales_alone_leaves_logits_unchanged(arch: str) -> None:
    model = make_model(arch)
    x = calib_ids(3, 48, seed=7)
    with torch.no_grad():
        before = model(x).logits
    folded = copy.deepcopy(model)
    result = quantize_model(folded, calib_ids(), AWQConfig(group_size=32), fold_only=True, progress=False)
    with torch.no_grad():
        after = folded(x).logits
    # the scales are far from 1, so the weights really changed
    alphas = [g["alpha"] for r in result.records for g in r.groups]
    assert any(a > 0 for a in alphas)
    changed = max(float((a - b).abs().max()) for a, b in zip(model.state_dict().values(), folded.state_dict().values()))
    assert changed > 1e-3
    rel = float((after - before).abs().max() / before.abs().max())
    assert rel <= 1e-5, rel


def test_discovery_restores_weights_exactly() -> None:
    model = make_model("llama_mha")
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    _plan(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
