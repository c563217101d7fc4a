#!/usr/bin/env bash
# Create the reference virtualenv that runs AutoAWQ 0.2.9 on CPU.
#
# The reference environment is deliberately separate from the main fastawq
# venv: AutoAWQ 0.2.9 needs transformers 4.x (last tested: 4.51.3) while
# fastawq itself runs on transformers 5.x.
#
# Usage:
#   bash scripts/setup_reference.sh            # create or verify the venv
#   FASTAWQ_REF_FORCE=1 bash scripts/setup_reference.sh   # rebuild from scratch
#
# Environment:
#   FASTAWQ_REF_VENV     venv location            (default: <repo>/.venv-ref)
#   FASTAWQ_REF_PYTHON   interpreter for the venv (default: python3, must be 3.11)
#   FASTAWQ_TORCH_WHEELS directory holding the CPU torch wheel (default: /opt/wheels)
#   FASTAWQ_REF_FORCE    set to 1 to delete and recreate the venv
#   FASTAWQ_REF_JEMALLOC set to 0 to skip installing Debian's libjemalloc2
#
# libjemalloc2 (best effort, needs root + apt) only makes the reference run
# faster: benchmarks/autoawq_reference.py preloads it when present. AutoAWQ's
# CPU clip search churns ~300 MB temporaries and glibc malloc spends about a
# third of the run in page faults. Results are bit-identical either way.
#
# Every package is pinned and installed with --no-deps, so pip never resolves
# anything on its own: in particular it can never pull a CUDA build of torch.
# torch is requested as the local version "2.13.0+cpu", which exists only as
# the wheel on local disk (PyPI carries no "+cpu" builds).
#
# AutoAWQ declares triton, datasets and zstandard as hard requirements. None of
# them is installed:
#   * triton is imported inside try/except (awq/utils/utils.py,
#     awq/modules/linear/gemm.py) and is only used by GPU kernels;
#   * zstandard is never imported by the awq package;
#   * datasets is imported at module level by awq/utils/calib_data.py, but its
#     only use is load_dataset() for a *named* Hugging Face dataset. We always
#     pass calibration texts as a list of str, so benchmarks/autoawq_reference.py
#     registers a tiny stand-in module for it (installing the real package
#     would also drag in pyarrow/pandas and upgrade huggingface_hub to a
#     version transformers 4.51.3 rejects).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FASTAWQ_REF_VENV:-${repo_root}/.venv-ref}"
python_bin="${FASTAWQ_REF_PYTHON:-python3}"
torch_wheels="${FASTAWQ_TORCH_WHEELS:-/opt/wheels}"

torch_req="torch==2.13.0+cpu"
autoawq_req="autoawq==0.2.9"
# Runtime dependencies of torch, transformers 4.51.3, accelerate and awq,
# pinned exactly. The Hugging Face stack uses releases contemporary with
# transformers 4.51.3 (AutoAWQ's last tested configuration).
pinned_reqs=(
  "transformers==4.51.3"
  "tokenizers==0.21.1"
  "huggingface-hub==0.30.2"
  "safetensors==0.5.3"
  "accelerate==1.6.0"
  "numpy==2.2.5"
  "typing-extensions==4.13.2"
  "filelock==3.18.0"
  "fsspec==2025.3.2"
  "jinja2==3.1.6"
  "markupsafe==3.0.2"
  "networkx==3.4.2"
  "sympy==1.14.0"
  "mpmath==1.3.0"
  "packaging==25.0"
  "pyyaml==6.0.2"
  "regex==2024.11.6"
  "requests==2.32.3"
  "certifi==2025.4.26"
  "charset-normalizer==3.4.2"
  "idna==3.10"
  "urllib3==2.4.0"
  "tqdm==4.67.1"
  "psutil==7.0.0"
  "setuptools==80.9.0"
  "wheel==0.45.1"
)

# Prints nothing and exits 0 when the venv holds exactly the pinned set.
check_venv() {
  local py="${venv}/bin/python"
  [[ -x "${py}" ]] || return 1
  "${py}" - "${torch_req}" "${autoawq_req}" "${pinned_reqs[@]}" <<'PY' || return 1
import sys
from importlib import metadata

bad = []
for req in sys.argv[1:]:
    name, want = req.split("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        bad.append(f"{name} missing")
        continue
    if have != want:
        bad.append(f"{name} {have} != {want}")
if bad:
    print("reference venv out of date: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
  # The heavy imports must work too (torch must be the CPU build).
  "${py}" -W ignore - <<'PY' >/dev/null || return 1
import torch, transformers, accelerate, tokenizers, safetensors  # noqa: F401
assert torch.version.cuda is None, "reference venv has a CUDA torch"
PY
}

install_jemalloc() {
  [[ "${FASTAWQ_REF_JEMALLOC:-1}" == "1" ]] || return 0
  grep -q 'libjemalloc\.so\.2' < <(ldconfig -p 2>/dev/null) && return 0
  if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null; then
    echo "note: libjemalloc2 not installed (needs root + apt); reference runs will be slower" >&2
    return 0
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2; } >/dev/null \
    || echo "note: apt-get install libjemalloc2 failed; reference runs will be slower" >&2
}

install_jemalloc

if [[ "${FASTAWQ_REF_FORCE:-0}" != "1" ]] && check_venv; then
  echo "reference venv OK: ${venv}"
  exit 0
fi

start=$(date +%s)
echo "creating reference venv at ${venv}"
rm -rf "${venv}"
"${python_bin}" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"need Python 3.11 for the cp311 torch wheel, got {sys.version}")
PY
"${python_bin}" -m venv "${venv}"
pip=("${venv}/bin/python" -m pip install --no-input --disable-pip-version-check)

# 1. torch (CPU wheel from local disk only), without its dependencies.
"${pip[@]}" --no-deps --find-links "${torch_wheels}" "${torch_req}"
# 2. everything else, each pinned, no resolver.
"${pip[@]}" --no-deps "${pinned_reqs[@]}"
# 3. AutoAWQ is published as an sdist only; build it with the pinned
#    setuptools/wheel already in the venv instead of an isolated build env.
"${pip[@]}" --no-deps --no-build-isolation "${autoawq_req}"

check_venv
echo "reference venv ready: ${venv} ($(( $(date +%s) - start ))s)"
