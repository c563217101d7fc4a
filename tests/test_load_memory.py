"""from_quantized must not materialise full-precision weights for quantized layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from fastawq import AWQConfig
from fastawq.algo.quant import quantize_weight
from fastawq.checkpoint import save_checkpoint
from fastawq.nn.qlinear import AWQLinear
from fastawq.pipeline import _set_module

PROBE = """
import sys, torch, transformers, safetensors.torch
from transformers import LlamaForCausalLM, LlamaConfig  # import the modeling code before measuring
from fastawq import checkpoint, nn
from fastawq import load_quantized
torch.ones(1) @ torch.ones(1)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

with open("/proc/self/clear_refs", "w") as fh:  # reset the high-water mark (VmHWM)
    fh.write("5")
before = status("VmRSS")
model, _ = load_quantized(sys.argv[1], dtype=torch.float32)
for t in [*model.parameters(), *model.buffers()]:  # touch every page: loaded tensors may be lazily mapped
    t.reshape(-1)[:: max(1, 4096 // t.element_size())].float().sum()
print(status("VmHWM") - before)
"""


def test_peak_memory_close_to_quantized_size(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=2,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=512,
    )
    model = LlamaForCausalLM(cfg).eval()  # random init, no calibration needed for a memory test
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.Linear) and ".layers." in name:
            _set_module(model, name, AWQLinear.from_quantized(quantize_weight(mod.weight.data, group_size=128), None))
    out = save_checkpoint(model, tmp_path / "ckpt", AWQConfig())
    del model
    on_disk = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    fp16_size = 2 * (4 * 2048 * 2048 + 3 * 2048 * 8192) * 2  # what fp16 linears alone would take
    assert on_disk < fp16_size / 3
    probe = subprocess.run([sys.executable, "-c", PROBE, str(out)], capture_output=True, text=True, check=True)
    grown = int(probe.stdout.strip().splitlines()[-1])
    print(
        f"peak RSS growth {grown / 1e6:.1f} MB, checkpoint {on_disk / 1e6:.1f} MB, "
        f"fp16 linears {fp16_size / 1e6:.1f} MB"
    )
    # Loading repacks every layer for the CPU int4 kernel (same size as the checkpoint). The checkpoint's
    # pages stay mapped (clean, reclaimable, but counted in RSS) while the repacked copy exists, so the
    # bound is two checkpoints plus a margin: still far below materialising fp16 weights.
    assert grown < 2 * on_disk + fp16_size / 4, (grown, on_disk, fp16_size)
