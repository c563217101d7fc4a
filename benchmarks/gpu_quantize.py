"""Time the AWQ search on a GPU with a real-shaped model and random weights.

    python benchmarks/gpu_quantize.py --layers 4 --json out.json

Builds a Llama-3-8B-shaped model (hidden 4096, intermediate 14336, 32 heads, 8 KV heads,
vocab 128256) with ``--layers`` decoder layers and random weights (the transformers init,
never zeros), calibrates on 128 random blocks of 512 tokens, and reports seconds per decoder
layer and peak GPU memory. Also checks the quantized layer against its fake-quantized twin.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fastawq import AWQConfig
from fastawq.pipeline import quantize_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="float16")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    dtype = getattr(torch, args.dtype)
    cfg = LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=args.layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    )
    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.cpu()
    torch.cuda.empty_cache()
    build = time.perf_counter() - t
    # give activations per-channel outliers, as trained models have
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.mul_(1.0 + 8.0 * (torch.rand(emb.shape[1]) < 0.01).to(dtype))
    ids = torch.randint(0, cfg.vocab_size, (args.samples, args.seq_len), generator=torch.Generator().manual_seed(1))
    torch.cuda.reset_peak_memory_stats()
    result = quantize_model(
        model,
        ids,
        AWQConfig(group_size=args.group_size),
        device="cuda",
        batch_size=args.batch_size,
        progress=False,
    )
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    per_layer = [r.seconds for r in result.records]
    ratio = [g["loss_awq"] / g["loss_rtn"] for r in result.records for g in r.groups if g["loss_rtn"] > 0]
    out = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "shape": "Llama-3-8B (4096/14336/32h/8kv)",
        "layers": args.layers,
        "calib": f"{args.samples}x{args.seq_len}",
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "group_size": args.group_size,
        "build_seconds": round(build, 1),
        "seconds_total": round(result.seconds, 2),
        "seconds_per_layer": [round(s, 2) for s in per_layer],
        "seconds_per_layer_steady": round(sum(per_layer[1:]) / max(len(per_layer) - 1, 1), 2),
        "peak_gpu_gib": round(peak, 2),
        "awq_over_rtn_loss_mean": round(sum(ratio) / len(ratio), 4),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
