"""Perplexity of SmolLM2-135M: full precision vs round-to-nearest vs fastawq AWQ vs AutoAWQ 0.2.9.

    .venv/bin/python benchmarks/accuracy.py --samples 128 --windows 64 --json out/accuracy.json

Calibration: the built-in corpus (reference sampling, seed 42); evaluation: the held-out corpus
(lcet10 + plrabn12), 512-token windows. AutoAWQ (run in .venv-ref by scripts/setup_reference.sh) is
given exactly the texts fastawq selected; its checkpoint is loaded with fastawq's loader.
Pass --no-reference to skip AutoAWQ (slow on CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from fastawq import AWQConfig, assets, load_quantized, quantize_model, save_quantized
from fastawq.calib import build_blocks, load_texts, select_samples, select_texts
from fastawq.evaluate import perplexity
from fastawq.loading import load_pretrained
from fastawq.pipeline import rtn_quantize

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--windows", type=int, default=64, help="512-token evaluation windows")
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    model_dir = assets.smollm2_dir()
    model, tok, _ = load_pretrained(model_dir, dtype=torch.float32)
    heldout = assets.read_corpus("heldout")
    texts = load_texts("builtin")
    chosen = select_texts(texts, tok, n_samples=args.samples, seq_len=args.seq_len)
    blocks = build_blocks(select_samples(texts, tok, n_samples=args.samples, seq_len=args.seq_len), args.seq_len)
    cfg = AWQConfig(group_size=args.group_size)

    def ppl(m: torch.nn.Module) -> float:
        return perplexity(m, tok, heldout, seq_len=512, max_windows=args.windows).ppl

    rows: dict[str, dict[str, float]] = {}
    rows["fp32"] = {"ppl": ppl(model)}
    rtn = copy.deepcopy(model)
    rtn_quantize(rtn, cfg)
    rows["rtn"] = {"ppl": ppl(rtn)}
    del rtn
    t0 = time.perf_counter()
    result = quantize_model(model, blocks, cfg)
    seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as work:
        ckpt = save_quantized(model, Path(work) / "awq", result, tokenizer=tok)
        loaded, _ = load_quantized(ckpt, dtype=torch.float32)
        rows["fastawq"] = {"ppl": ppl(loaded), "seconds": round(seconds, 1)}
        del loaded
        ref_py = Path(os.environ.get("FASTAWQ_REF_VENV", ROOT / ".venv-ref")) / "bin" / "python"
        if not args.no_reference and ref_py.is_file():
            (Path(work) / "texts.json").write_text(json.dumps(chosen))
            t0 = time.perf_counter()
            subprocess.run(
                [
                    str(ref_py),
                    str(ROOT / "benchmarks" / "autoawq_reference.py"),
                    "--model-dir",
                    str(model_dir),
                    "--texts-json",
                    str(Path(work) / "texts.json"),
                    "--out",
                    str(Path(work) / "ref"),
                    "--group-size",
                    str(args.group_size),
                    "--w-bit",
                    "4",
                    "--max-calib-samples",
                    str(args.samples),
                    "--max-calib-seq-len",
                    str(args.seq_len),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            ref_seconds = time.perf_counter() - t0
            ref, _ = load_quantized(Path(work) / "ref", dtype=torch.float32)
            rows["autoawq-0.2.9"] = {"ppl": ppl(ref), "seconds": round(ref_seconds, 1)}
    base, rtn_ppl = rows["fp32"]["ppl"], rows["rtn"]["ppl"]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32)",
        "config": f"w4 g{args.group_size} zero point, GEMM",
        "calibration": f"builtin, {args.samples} samples -> {blocks.shape[0]} blocks x {args.seq_len}",
        "evaluation": f"heldout (lcet10+plrabn12), {args.windows} windows x 512",
        "cpu_threads": torch.get_num_threads(),
        "rows": rows,
        "awq_increase_over_rtn_increase": round((rows["fastawq"]["ppl"] - base) / (rtn_ppl - base), 3),
    }
    print(f"{'method':<16}{'perplexity':>12}{'seconds':>10}")
    for name, row in rows.items():
        print(f"{name:<16}{row['ppl']:>12.3f}{row.get('seconds', float('nan')):>10.1f}")
    print(f"AWQ's increase over fp32 is {report['awq_increase_over_rtn_increase']:.2f}x RTN's")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
