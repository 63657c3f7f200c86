#!/bin/sh
# Install the torch build that suits this machine, for `make install`. Usage: install-torch.sh PYTHON
#
#   TORCH=auto (default)  the CUDA build where `nvidia-smi` lists a GPU (Linux), else the CPU build
#   TORCH=cpu | cuda      that build
#   TORCH="<pip args>"    passed to pip as is, e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
#   TORCH_VERSION         2.13.0 unless set
#   TORCH_DRY_RUN=1       print the pip commands instead of running them
#
# The CPU build comes from a local `+cpu` wheel when pip's configured find-links has one (--no-index: no
# index is asked, so nothing can hang on one), else from the official CPU index. The CUDA build is PyPI's
# plain torch on Linux. macOS and Windows wheels on PyPI have no CUDA: the plain line is right there.
set -eu
PY=$1
VERSION=${TORCH_VERSION:-2.13.0}
CHOICE=${TORCH:-auto}
CPU_INDEX=https://download.pytorch.org/whl/cpu

pip() {
  if [ -n "${TORCH_DRY_RUN:-}" ]; then echo "pip $*"; else "$PY" -m pip "$@"; fi
}

installed() {  # the installed torch version, e.g. 2.13.0+cpu, or nothing
  "$PY" -c "import importlib.metadata as m; print(m.version('torch'))" 2>/dev/null || true
}

if [ "$CHOICE" = auto ]; then
  case "$(installed)" in "$VERSION" | "$VERSION+"*) exit 0 ;; esac  # keep the build already installed
  if [ "$(uname -s)" != Linux ]; then
    CHOICE=plain
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    CHOICE=cuda
  else
    CHOICE=cpu
  fi
fi

case "$CHOICE" in
  cpu)
    [ "$(installed)" = "$VERSION+cpu" ] && exit 0
    echo "torch: installing the CPU build of torch $VERSION (about 190 MB; TORCH=cuda for the CUDA build)" >&2
    if pip install -q --no-index --no-deps "torch==$VERSION+cpu" 2>/dev/null; then
      pip install -q "torch==$VERSION+cpu"  # its small dependencies, from the usual index
    else
      pip install -q "torch==$VERSION" --index-url "$CPU_INDEX" || {
        echo "torch: $CPU_INDEX failed; name a build yourself, e.g. make TORCH=torch==$VERSION (PyPI's)" >&2
        exit 1
      }
    fi
    ;;
  cuda)
    case "$(installed)" in *+cpu) pip uninstall -q -y torch ;; esac  # "torch==X" is satisfied by X+cpu
    echo "torch: installing the CUDA build of torch $VERSION from PyPI" \
      "(about 3 GB with its NVIDIA libraries; TORCH=cpu for the CPU build)" >&2
    pip install -q "torch==$VERSION"
    ;;
  plain)
    pip install -q "torch==$VERSION"
    ;;
  *)
    # shellcheck disable=SC2086  # word splitting is the point: TORCH holds pip arguments
    pip install -q $CHOICE
    ;;
esac
