"""Quantize a model with the reference AWQ implementation (AutoAWQ 0.2.9) on CPU.

This is fastawq's accuracy baseline: the claim "fastawq is never worse than
the reference AWQ given the same calibration data" is checked against the
checkpoints this script writes. It runs *inside the reference virtualenv*
created by ``scripts/setup_reference.sh`` (torch 2.13.0+cpu, transformers
4.51.3, autoawq 0.2.9), never inside fastawq's own environment.

What it does:

1. Reads the calibration texts (a JSON list of strings) and hands them to
   AutoAWQ unchanged as ``calib_data=<list of str>``; AutoAWQ tokenizes and
   packs them into ``max_calib_seq_len`` blocks itself.
2. Builds a temporary directory of symlinks to ``--model-dir`` with a
   transformers-4.x compatible ``config.json`` / ``tokenizer_config.json``
   (checkpoints saved by transformers 5.x keep ``rope_theta`` under
   ``rope_parameters`` and the dtype under ``dtype``; transformers 4.51.3 would
   silently fall back to its defaults, e.g. rope_theta=10000). The input
   directory is never modified.
3. Loads the model in float32 on CPU, checks every weight against the
   safetensors file, runs ``AutoAWQForCausalLM.quantize`` with a GEMM config
   and writes the checkpoint with ``save_quantized`` plus the tokenizer.
4. Writes ``reference_run.json`` (versions, arguments, calibration block
   count and a SHA-256 of the calibration token ids, timings) next to the
   checkpoint and prints the elapsed seconds.

IMPORTANT: stock AutoAWQ 0.2.9 produces a corrupt model when run on CPU (its
scale search relies on ``Tensor.cpu()`` copying; see ``make_quantizer_cls``).
By default this script passes a quantizer subclass that restores GPU
semantics without changing the algorithm; ``--stock-cpu-bug`` disables it.

AutoAWQ runs in float32 on CPU here (scale and clip search in float32), but
its final quantization step casts each Linear to float16, so scales are
float16; unquantized tensors (embeddings, norms) stay float32 in the output.
By default the process re-executes itself with jemalloc preloaded when
Debian's libjemalloc2 is installed (``--allocator``): same numbers, less time.

Example::

    .venv-ref/bin/python benchmarks/autoawq_reference.py \\
        --model-dir /tmp/smollm2-hf --texts-json calib.json --out out/ref \\
        --group-size 64 --w-bit 4 --max-calib-samples 128 --max-calib-seq-len 512
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

# Files transformers 5.x writes in a format transformers 4.51.3 misreads.
_PATCHED_FILES = ("config.json", "tokenizer_config.json")
# tokenizer_config.json keys that only transformers 5.x understands.
_TOKENIZER_KEYS_5X = ("backend", "is_local", "local_files_only")
# Debian's libjemalloc2. AutoAWQ's clip search allocates and frees ~300 MB
# temporaries in a tight loop; glibc serves them with fresh mmaps, so on CPU
# about a third of the run is page-fault handling. jemalloc with page decay
# disabled reuses the memory. Numerics are unaffected.
_JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
)
_JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
_REEXEC_MARKER = "FASTAWQ_REF_ALLOCATOR_SET"


@dataclass(frozen=True)
class Args:
    """Parsed command line."""

    model_dir: Path
    texts_json: Path
    out: Path
    group_size: int
    w_bit: int
    max_calib_samples: int
    max_calib_seq_len: int
    zero_point: bool
    export_compatible: bool
    n_parallel_calib_samples: int | None
    allocator: str
    fix_cpu_aliasing: bool


def _fail(message: str) -> NoReturn:
    print(f"autoawq_reference: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(
        description="Quantize a model with AutoAWQ 0.2.9 on CPU (fastawq's accuracy baseline).",
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="HF-format model directory")
    parser.add_argument("--texts-json", type=Path, required=True, help="JSON list of calibration strings")
    parser.add_argument("--out", type=Path, required=True, help="output directory for the AWQ checkpoint")
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--w-bit", type=int, default=4)
    parser.add_argument("--max-calib-samples", type=int, default=128)
    parser.add_argument("--max-calib-seq-len", type=int, default=512)
    parser.add_argument(
        "--no-zero-point",
        action="store_true",
        help="symmetric quantization; AutoAWQ 0.2.9 can only do this with --export-compatible",
    )
    parser.add_argument(
        "--export-compatible",
        action="store_true",
        help="apply AWQ scales and clipping but do not quantize: saves float weights",
    )
    parser.add_argument(
        "--n-parallel-calib-samples",
        type=int,
        default=None,
        help="forward calibration blocks in chunks of this size (AutoAWQ default: all at once)",
    )
    parser.add_argument(
        "--stock-cpu-bug",
        action="store_true",
        help="do NOT fix AutoAWQ's CPU-only state-dict aliasing bug (reproduces stock, broken CPU output)",
    )
    parser.add_argument(
        "--allocator",
        choices=("auto", "jemalloc", "system"),
        default="auto",
        help="auto: use jemalloc when installed (same numbers, ~2x less time on page faults)",
    )
    ns = parser.parse_args(argv)
    args = Args(
        model_dir=ns.model_dir,
        texts_json=ns.texts_json,
        out=ns.out,
        group_size=ns.group_size,
        w_bit=ns.w_bit,
        max_calib_samples=ns.max_calib_samples,
        max_calib_seq_len=ns.max_calib_seq_len,
        zero_point=not ns.no_zero_point,
        export_compatible=ns.export_compatible,
        n_parallel_calib_samples=ns.n_parallel_calib_samples,
        allocator=ns.allocator,
        fix_cpu_aliasing=not ns.stock_cpu_bug,
    )
    if args.w_bit != 4:
        _fail("AutoAWQ 0.2.9 GEMM packing supports only --w-bit 4")
    if not args.zero_point and not args.export_compatible:
        # WQLinear_GEMM.from_linear asserts that zeros is not None, and the
        # quantizer passes zeros=None when zero_point is False.
        _fail("AutoAWQ 0.2.9 cannot pack GEMM weights without zero points; add --export-compatible")
    if not args.model_dir.is_dir():
        _fail(f"--model-dir {args.model_dir} is not a directory")
    return args


def _find_jemalloc() -> str | None:
    return next((p for p in _JEMALLOC_PATHS if os.path.exists(p)), None)


def maybe_reexec_with_jemalloc(choice: str) -> str:
    """Restart this process with jemalloc preloaded if requested/available.

    Returns the allocator in effect ("jemalloc" or "system"); does not return
    when it re-executes.
    """
    if os.environ.get(_REEXEC_MARKER):
        return os.environ[_REEXEC_MARKER]
    lib = _find_jemalloc() if choice != "system" else None
    if choice == "jemalloc" and lib is None:
        _fail("--allocator jemalloc: libjemalloc.so.2 not found (apt-get install libjemalloc2)")
    env = dict(os.environ)
    if lib is None:
        env[_REEXEC_MARKER] = "system"
        os.environ.update(env)
        return "system"
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else lib
    env.setdefault("MALLOC_CONF", _JEMALLOC_CONF)
    env[_REEXEC_MARKER] = "jemalloc"
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def load_texts(path: Path) -> list[str]:
    """Load the calibration texts; they are passed to AutoAWQ verbatim."""
    data: Any = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not data or not all(isinstance(t, str) for t in data):
        _fail(f"{path} must hold a non-empty JSON list of strings")
    return list(data)


def _compat_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return config.json contents readable by transformers 4.x."""
    patched = dict(config)
    rope = config.get("rope_parameters")
    if isinstance(rope, dict):
        if "rope_theta" in rope and "rope_theta" not in patched:
            patched["rope_theta"] = rope["rope_theta"]
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default" and "rope_scaling" not in patched:
            patched["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if "dtype" in config and "torch_dtype" not in patched:
        patched["torch_dtype"] = config["dtype"]
    return patched


def _compat_tokenizer_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return tokenizer_config.json contents loadable by transformers 4.x."""
    patched = {k: v for k, v in config.items() if k not in _TOKENIZER_KEYS_5X}
    if patched.get("tokenizer_class") == "TokenizersBackend":
        # 5.x's generic tokenizers-backed class; 4.x's equivalent.
        patched["tokenizer_class"] = "PreTrainedTokenizerFast"
    return patched


def make_compat_dir(model_dir: Path, dest: Path) -> dict[str, Any]:
    """Fill ``dest`` with symlinks to ``model_dir`` plus patched config files.

    Returns the patched config.json contents.
    """
    model_dir = model_dir.resolve()
    for entry in model_dir.iterdir():
        if entry.name not in _PATCHED_FILES:
            (dest / entry.name).symlink_to(entry)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    patched = _compat_config(config)
    (dest / "config.json").write_text(json.dumps(patched, indent=2) + "\n", encoding="utf-8")
    tok_path = model_dir / "tokenizer_config.json"
    if tok_path.exists():
        tok_cfg = json.loads(tok_path.read_text(encoding="utf-8"))
        (dest / "tokenizer_config.json").write_text(
            json.dumps(_compat_tokenizer_config(tok_cfg), indent=2) + "\n", encoding="utf-8"
        )
    return patched


def install_datasets_stand_in() -> bool:
    """Make ``import datasets`` succeed when the package is not installed.

    awq.utils.calib_data imports ``load_dataset`` at module level but calls it
    only when ``calib_data`` is a dataset *name*; we always pass a list of
    strings. Must run after transformers is imported (its availability probes
    must keep seeing datasets as absent). Returns True if the stand-in is used.
    """
    if importlib.util.find_spec("datasets") is not None:
        return False
    module = types.ModuleType("datasets")
    module.__spec__ = importlib.machinery.ModuleSpec("datasets", loader=None)

    def load_dataset(*_args: object, **_kwargs: object) -> NoReturn:
        raise RuntimeError("datasets is not installed in the reference venv; pass calib_data as a list of str")

    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    sys.modules["datasets"] = module
    return True


def make_quantizer_cls(fix_cpu_aliasing: bool) -> type[Any]:
    """Return the AwqQuantizer class to pass as ``quantize(quantizer_cls=...)``.

    AutoAWQ 0.2.9's scale search snapshots the inspected module with
    ``org_sd = {k: v.cpu() for k, v in module2inspect.state_dict().items()}``,
    then scales the live weights in place (``fc.weight.mul_``) and restores
    them with ``load_state_dict(org_sd)`` after every grid point. On a GPU
    ``.cpu()`` makes a copy; on CPU it returns the *same* tensor, so the
    snapshot is corrupted by the first in-place scaling. Every later grid
    point then evaluates W*s0*s instead of W*s (s0 = the alpha=0 scale), and
    the layer is left holding W*s0 before the chosen scale is applied, while
    the preceding norm/linear only receives 1/s. The resulting checkpoint is
    inconsistent (SmolLM2-135M: perplexity ~22 -> ~97000).

    The fix changes nothing in the algorithm: while ``_compute_best_scale``
    runs, the inspected module's ``state_dict()`` returns clones, which is
    exactly what ``.cpu()`` yields when the module lives on a GPU.
    """
    from awq.quantize.quantizer import AwqQuantizer

    stock: type[Any] = AwqQuantizer
    if not fix_cpu_aliasing:
        return stock

    class CpuSnapshotAwqQuantizer(AwqQuantizer):  # type: ignore[misc]
        def _compute_best_scale(
            self,
            x: Any,
            w_mean: Any,
            x_mean: Any,
            module2inspect: Any,
            linears2scale: Any,
            fp16_output: Any,
            kwargs: Any = None,
        ) -> Any:
            original_state_dict = type(module2inspect).state_dict

            def cloned_state_dict(*args: Any, **kw: Any) -> dict[str, Any]:
                state = original_state_dict(module2inspect, *args, **kw)
                return {name: tensor.clone() for name, tensor in state.items()}

            # Instance attribute shadows nn.Module.state_dict for this call only.
            module2inspect.state_dict = cloned_state_dict
            try:
                return super()._compute_best_scale(
                    x,
                    w_mean,
                    x_mean,
                    module2inspect,
                    linears2scale,
                    fp16_output,
                    {} if kwargs is None else kwargs,
                )
            finally:
                del module2inspect.state_dict

    return CpuSnapshotAwqQuantizer


def verify_weights(model: Any, model_dir: Path) -> int:
    """Check every tensor in the safetensors files equals the loaded parameter.

    Guards against transformers 4.x silently re-initialising weights whose
    names it does not recognise. Returns the number of tensors checked.
    """
    import torch
    from safetensors import safe_open

    state = model.state_dict()
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        _fail(f"no *.safetensors file in {model_dir}")
    seen: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                if name not in state:
                    _fail(f"checkpoint tensor {name} has no parameter in the loaded model")
                expected = handle.get_tensor(name).to(state[name].dtype)
                if not torch.equal(state[name], expected):
                    _fail(f"loaded parameter {name} differs from the checkpoint")
                seen.add(name)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = sorted(set(state) - seen - tied)
    if missing:
        _fail(f"parameters not in the checkpoint (would be random): {missing[:5]}")
    return len(seen)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    allocator = maybe_reexec_with_jemalloc(args.allocator)
    texts = load_texts(args.texts_json)
    t_start = time.perf_counter()

    import torch
    import transformers
    from transformers import AutoTokenizer

    used_stand_in = install_datasets_stand_in()
    with warnings.catch_warnings():
        # awq/__init__.py emits its deprecation notice on import.
        warnings.simplefilter("ignore", DeprecationWarning)
        import awq
        from awq import AutoAWQForCausalLM
        from awq.utils.calib_data import get_calib_dataset

    with tempfile.TemporaryDirectory(prefix="autoawq-ref-model-") as tmp:
        compat_dir = Path(tmp)
        patched_config = make_compat_dir(args.model_dir, compat_dir)

        tokenizer = AutoTokenizer.from_pretrained(str(compat_dir))
        # Same call AutoAWQ makes internally; done here only to report the
        # calibration set size and to fail early with a readable message.
        blocks = get_calib_dataset(
            data=texts,
            tokenizer=tokenizer,
            n_samples=args.max_calib_samples,
            max_seq_len=args.max_calib_seq_len,
        )
        if not blocks:
            _fail("calibration texts yield fewer than max_calib_seq_len tokens; AutoAWQ needs at least one full block")
        n_blocks = len(blocks)
        calib_sha256 = hashlib.sha256(torch.cat(blocks, dim=0).to(torch.int64).numpy().tobytes()).hexdigest()
        print(f"calibration: {n_blocks} blocks x {args.max_calib_seq_len} tokens", flush=True)

        t_load = time.perf_counter()
        model = AutoAWQForCausalLM.from_pretrained(
            str(compat_dir),
            torch_dtype=torch.float32,
            device_map=None,
            trust_remote_code=False,
            safetensors=True,
        )
        expected_theta = patched_config.get("rope_theta")
        if expected_theta is not None and model.model.config.rope_theta != expected_theta:
            _fail(f"rope_theta {model.model.config.rope_theta} != config {expected_theta}")
        n_tensors = verify_weights(model.model, compat_dir)
        load_s = time.perf_counter() - t_load

        quant_config = {
            "zero_point": args.zero_point,
            "q_group_size": args.group_size,
            "w_bit": args.w_bit,
            "version": "GEMM",
        }
        t_quant = time.perf_counter()
        model.quantize(
            tokenizer,
            quant_config=quant_config,
            calib_data=texts,
            max_calib_samples=args.max_calib_samples,
            max_calib_seq_len=args.max_calib_seq_len,
            n_parallel_calib_samples=args.n_parallel_calib_samples,
            export_compatible=args.export_compatible,
            quantizer_cls=make_quantizer_cls(args.fix_cpu_aliasing),
        )
        quantize_s = time.perf_counter() - t_quant

        args.out.mkdir(parents=True, exist_ok=True)
        t_save = time.perf_counter()
        model.save_quantized(str(args.out))
        tokenizer.save_pretrained(str(args.out))
        save_s = time.perf_counter() - t_save

    total_s = time.perf_counter() - t_start
    record = {
        "implementation": "autoawq",
        "versions": {
            "autoawq": awq.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
        "quant_config": quant_config,
        "dtype": "float32",
        "torch_threads": torch.get_num_threads(),
        "allocator": allocator,
        "fix_cpu_state_dict_aliasing": args.fix_cpu_aliasing,
        "datasets_stand_in": used_stand_in,
        "n_texts": len(texts),
        "n_calib_blocks": n_blocks,
        "calib_tokens_sha256": calib_sha256,
        "weights_checked": n_tensors,
        "seconds": {
            "load": round(load_s, 2),
            "quantize": round(quantize_s, 2),
            "save": round(save_s, 2),
            "total": round(total_s, 2),
        },
    }
    (args.out / "reference_run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"quantize: {quantize_s:.1f}s  total: {total_s:.1f}s  -> {args.out}", flush=True)


if __name__ == "__main__":
    # Keep tokenizers' thread pool from fighting torch for the 2 cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
