from __future__ import annotations

import subprocess
import sys


def test_import_is_lean_and_never_touches_cuda() -> None:
    code = (
        "import sys, fastawq\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'gguf', 'triton') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "fastawq.AWQConfig(group_size=64)\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_attributes_resolve() -> None:
    import fastawq

    assert fastawq.AutoAWQForCausalLM.__name__ == "AutoAWQForCausalLM"
    assert callable(fastawq.quantize) and callable(fastawq.load_quantized)
