"""CPU decode speed: one SmolLM2-135M decode step at batch 1, int4 kernels against bf16 and fp32.

    python benchmarks/cpu_decode.py --json cpu_decode.json     # needs scripts/setup_assets.sh first

The model is quantized round-to-nearest, w4 g64, in memory (the kernels do not care how the codes were
chosen). Each variant prefills a 64-token prompt, then times 48 single-token steps with the KV cache
(median per step). Threads: torch's default (all cores). Also checks that the int4 logits match the
reference kernel's on the same weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from fastawq import AWQConfig
from fastawq.assets import smollm2_dir
from fastawq.nn.qlinear import AWQLinear
from fastawq.pipeline import rtn_quantize


def decode_ms(model: torch.nn.Module, prompt: torch.Tensor, steps: int) -> float:
    with torch.inference_mode():
        out = model(prompt, use_cache=True)
        past = out.past_key_values
        tok = out.logits[:, -1:].argmax(-1)
        for _ in range(3):  # warm-up steps
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = model(tok, past_key_values=past, use_cache=True)
            times.append(time.perf_counter() - t0)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return statistics.median(times) * 1e3


def kernels_used(model: torch.nn.Module) -> list[str]:
    return sorted({m.layout for m in model.modules() if isinstance(m, AWQLinear)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="cpu_decode.json")
    ap.add_argument("--steps", type=int, default=48)
    args = ap.parse_args()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), dtype=torch.float32).eval()
    prompt = torch.randint(0, base.config.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))

    q32 = copy.deepcopy(base)
    rtn_quantize(q32, AWQConfig(group_size=64), pack=True)
    q16 = copy.deepcopy(q32).to(torch.bfloat16)  # AWQLinear keeps its fp16 scales; the rest turns bf16

    rows: list[dict[str, Any]] = []

    def run(name: str, model: torch.nn.Module, kernel: str | None = None) -> None:
        if kernel:
            os.environ["FASTAWQ_KERNEL"] = kernel
        else:
            os.environ.pop("FASTAWQ_KERNEL", None)
        ms = decode_ms(model, prompt, args.steps)
        rows.append({"variant": name, "ms_per_step": ms, "layouts": kernels_used(model)})
        print(f"{name:44s} {ms:8.2f} ms/step  {kernels_used(model)}", flush=True)

    run("fp32 dense", base)
    run("bf16 dense", copy.deepcopy(base).to(torch.bfloat16))
    run("int4 (cpu_int4 kernel), rest fp32", q32)
    run("int4 (cpu_int4 kernel), rest bf16", q16)
    run("int4 (reference kernel), rest fp32", q32, kernel="reference")
    os.environ.pop("FASTAWQ_KERNEL", None)

    # the int4 kernel against the reference kernel on the same quantized weights: logits of the prompt
    with torch.inference_mode():
        os.environ["FASTAWQ_KERNEL"] = "reference"
        ref = q32(prompt).logits.float()
        os.environ.pop("FASTAWQ_KERNEL")
        fast = q32(prompt).logits.float()
    rel = float((fast - ref).norm() / ref.norm())
    top1 = float((fast.argmax(-1) == ref.argmax(-1)).float().mean())
    by = {r["variant"]: r["ms_per_step"] for r in rows}
    int4 = by["int4 (cpu_int4 kernel), rest fp32"]
    summary = {
        "speedup_vs_fp32": by["fp32 dense"] / int4,
        "speedup_vs_bf16": by["bf16 dense"] / int4,
        "int4_bf16_rest_speedup_vs_bf16": by["bf16 dense"] / by["int4 (cpu_int4 kernel), rest bf16"],
        "logits_rel_err_vs_reference": rel,
        "top1_agreement_vs_reference": top1,
    }
    print(json.dumps(summary, indent=1))
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    with open(args.json, "w") as f:
        json.dump({"info": info, "rows": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
