"""The README.md written into every checkpoint: what it is, how it was made, how to load it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastawq import __version__
from fastawq.config import AWQConfig


def render_card(
    name: str,
    config: AWQConfig,
    *,
    base_model: str | None = None,
    calibration: str | None = None,
    record: Mapping[str, Any] | None = None,
    perplexity: Mapping[str, float] | None = None,
    perplexity_data: str | None = None,
    fastawq_version: str = "",
) -> str:
    """Markdown with a Hugging Face front matter block; missing facts are stated as unknown."""
    rec = record or {}
    opts = rec.get("search_options") or {}
    kind = "asymmetric (zero points)" if config.zero_point else "symmetric"
    skipped = "".join(", " + m for m in config.modules_to_not_convert or ())
    base = base_model or "unknown (not recorded)"
    lines = ["---"]
    if base_model and re.fullmatch(r"[\w.-]+/[\w.-]+", base_model):  # a hub id, not a local path or prose
        lines.append(f"base_model: {base_model}")
    lines += ["library_name: transformers", "tags:", "- awq", "- 4-bit", "- fastawq", "---", ""]
    lines += [f"# {name}", ""]
    lines += [
        f"4-bit AWQ quantization of **{base}**, made with fastawq {fastawq_version}".rstrip() + ".",
        "",
        "## Method and settings",
        "",
        "- Method: AWQ (activation-aware weight quantization, arXiv:2306.00978): per-channel scales searched",
        "  on calibration activations, folded into the preceding layer, then group-wise round-to-nearest.",
        f"- Bits {config.bits}, group size {config.group_size}, {kind}, layout AWQ {config.version.value.upper()}.",
        f"- Not quantized: embeddings, lm_head{skipped}.",
    ]
    if opts:
        lines.append(
            f"- Search: {opts.get('n_grid', '?')}-point α grid, clipping "
            f"{'on' if opts.get('apply_clip', True) else 'off'}, error propagation "
            f"{'on' if opts.get('error_propagation') else 'off'}."
        )
    if rec.get("seconds") is not None:
        lines.append(f"- Quantization took {float(rec['seconds']):.0f} s.")
    lines += ["", "## Calibration data", ""]
    cal = calibration or "not recorded"
    tokens = rec.get("n_calib_tokens")
    lines.append(f"- {cal}" + (f" ({tokens} tokens)." if tokens else "."))
    lines += ["", "## Measured quality", ""]
    if perplexity:
        lines += ["| model | perplexity |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in perplexity.items()]
        lines += ["", f"Perplexity on {perplexity_data or 'held-out text'} (never used for calibration)."]
    else:
        lines.append("Not measured when this checkpoint was written; run `fastawq eval` on it.")
    lines += [
        "",
        "## Loading",
        "",
        "vLLM (picks its AWQ Marlin kernels on recent GPUs):",
        "",
        "```python",
        "from vllm import LLM",
        f'llm = LLM(model="{name}", quantization="awq")',
        "```",
        "",
        "transformers 5.x (needs the `gptqmodel` and `accelerate` packages; 4.x needed `autoawq`):",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{name}", device_map="auto")',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        "```",
        "",
        "fastawq (its own kernels on GPU and CPU):",
        "",
        "```python",
        "from fastawq import load_quantized",
        f'model, config = load_quantized("{name}", device="cuda")',
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(out_dir: Any, config: AWQConfig, **facts: Any) -> None:
    """(Re)write ``out_dir/README.md``, e.g. once perplexity has been measured on the saved checkpoint."""
    out = Path(out_dir)
    record_file = out / "fastawq_record.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else None
    tmp = out / ".README.md.tmp"
    tmp.write_text(render_card(out.name, config, record=record, fastawq_version=__version__, **facts))
    os.replace(tmp, out / "README.md")
