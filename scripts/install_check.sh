#!/usr/bin/env bash
# Each install line of the README (Install), in a fresh venv, as a new user runs it; then what
# must work there: `import mse_grad_triton`, enable() with its C++ override and nothing printed,
# and `./run check` on this machine (the CPU, through the installed Triton's interpreter).
#
#   scripts/install_check.sh [LINE ...]     (./run install-check; default: every line)
#
# LINE: cpu               CPU development: torch 2.13 CPU + the cpu,test,bench extras
#       ascend-torch-2.15 Atlas host whose torch pulls upstream Triton (x86_64 torch 2.15.0, a
#                         CUDA build: the triton dependency torch_npu's torch has too)
#       ascend-torch-2.13 Atlas host whose torch has no triton dependency (torch 2.13 CPU)
#       cuda-torch-2.15   CUDA host, torch 2.15.0 (upstream Triton 3.9)
#       cuda-torch-2.14   CUDA host, torch 2.14.1 (upstream Triton 3.8)
#       run-torch-2.15    ./run itself with MSE_GRAD_TRITON_TORCH=torch==2.15.0 (its .venv, in
#                         a copy of the working tree)
#
# The torch CUDA builds download several GB each (pip's cache keeps them), so CI does not run
# this. Venvs go to $INSTALL_CHECK_DIR (default: a temporary folder, removed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# The versions tested are the ones named here: a machine-wide pip constraints file must not
# swap in others.
export PIP_CONSTRAINT=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
root=${INSTALL_CHECK_DIR:-$(mktemp -d)}
[[ -n ${INSTALL_CHECK_DIR:-} ]] || trap 'rm -rf "$root"' EXIT

# The README's lines, one function each, run inside the new venv ($pip is its pip).
line_cpu() {
  $pip install torch==2.13.0 && $pip install -e "$repo[cpu,test,bench]"
}
line_ascend_torch_2_15() {
  $pip install torch==2.15.0
  $pip install -e "$repo[ascend]"
  # torch's upstream triton shares triton-ascend's folder: keep triton-ascend alone.
  $pip uninstall -y triton triton-ascend && $pip install --no-deps triton-ascend==3.2.0
  $pip install "numpy<2"  # a CPU host only: Triton's interpreter needs it (not on an NPU)
}
line_ascend_torch_2_13() {
  $pip install torch==2.13.0
  $pip install -e "$repo[ascend]"
  $pip uninstall -y triton triton-ascend && $pip install --no-deps triton-ascend==3.2.0
  $pip install "numpy<2"  # a CPU host only, as above
}
line_cuda_torch_2_15() {
  $pip install torch==2.15.0 && $pip install -e "$repo[cuda]"
  $pip install "numpy<2"  # a CPU host only: Triton's interpreter needs it (not on a GPU)
}
line_cuda_torch_2_14() {
  $pip install torch==2.14.1 && $pip install -e "$repo[cuda]"
  $pip install "numpy<2"  # a CPU host only, as above
}

# ./run builds its own .venv in a copy of the tree; the venv made above stays empty.
line_run_torch_2_15() {
  local tree=$venv/tree
  mkdir -p "$tree"
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$tree"
  MSE_GRAD_TRITON_TORCH=torch==2.15.0 "$tree/run" check --help >/dev/null
  python=$tree/.venv/bin/python
}

# What a new user then does: import, enable() (C++ override, silent), the correctness check.
verify() {
  local python=$1 cache=$2 stderr
  stderr=$(mktemp)
  MSE_GRAD_TRITON_CACHE_DIR=$cache "$python" -c '
import torch, triton, mse_grad_triton as mgt
mgt.enable(devices=("cpu",))
assert mgt.enabled_override("cpu") == "c++", mgt.enabled_override("cpu")
x = torch.ones(3, requires_grad=True)
torch.nn.MSELoss()(x, torch.zeros(3)).backward()
assert x.grad.tolist() == [torch.tensor(2 / 3).item()] * 3
print(f"  torch {torch.__version__}, triton {triton.__version__}: import and enable() ok")
' 2>"$stderr"
  if [[ -s $stderr ]]; then
    echo "  enable() printed to stderr:" >&2
    cat "$stderr" >&2
    return 1
  fi
  MSE_GRAD_TRITON_PYTHON=$python ./run check | tail -1
}

lines=("$@")
[[ ${#lines[@]} -gt 0 ]] || lines=(cpu ascend-torch-2.15 ascend-torch-2.13 cuda-torch-2.15
                                    cuda-torch-2.14 run-torch-2.15)
failed=0
for line in "${lines[@]}"; do
  name=line_${line//[-.]/_}
  if ! declare -F "$name" >/dev/null; then
    echo "unknown line $line" >&2
    exit 2
  fi
  venv=$root/$line
  echo "== $line ($venv)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  pip="$venv/bin/python -m pip"
  python=$venv/bin/python  # the environment to verify (a line may name another)
  if "$name" >"$venv.log" 2>&1 && verify "$python" "$root/cache-$line"; then
    echo "  ok"
  else
    echo "  FAILED (install log: $venv.log)"
    tail -5 "$venv.log"
    failed=$((failed + 1))
  fi
done
echo "$(( ${#lines[@]} - failed )) passed, $failed failed"
[[ $failed -eq 0 ]]
