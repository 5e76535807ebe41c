#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and print its path.
#
# The venv lives outside the clone, keyed by a hash of requirements.txt and the
# Python version, so CI and fresh clones reinstall only when requirements change.
# A venv whose install did not finish (no .complete marker) is rebuilt.
# The project itself is not pip-installed into the shared venv (an editable
# install would tie it to one clone); the Makefile puts the clone on PYTHONPATH.
#
# scripts/venv.sh --bench: the benchmark venv instead, with requirements.txt plus
# requirements-bench.txt (peer systems of benchmarks/quality.py, never runtime
# dependencies), keyed by the hash of both files: venv-bench-py<version>-<hash>.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=0
if [ $# -gt 0 ]; then
  if [ "$1" = "--bench" ] && [ $# -eq 1 ]; then
    bench=1
  else
    echo "usage: scripts/venv.sh [--bench]" >&2
    exit 2
  fi
fi
python=${PYTHON:-python3}
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
requirements=("$root/requirements.txt")
name=venv
if [ "$bench" = 1 ]; then
  requirements+=("$root/requirements-bench.txt")
  name=venv-bench
fi
install_args=()
for file in "${requirements[@]}"; do install_args+=(-r "$file"); done
key=$( (cat "${requirements[@]}"; echo "$pyver") | sha256sum | cut -c1-16)
cache=${SB_ENHANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sb-enhance}
venv="$cache/$name-py$pyver-$key"
if [ ! -f "$venv/.complete" ]; then
  mkdir -p "$cache"
  # One creator at a time: a second caller waits, then finds the venv complete.
  exec 9>"$cache/.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    echo "venv.sh: creating $venv (requirements changed or first run)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -qq --upgrade pip >&2
    "$venv/bin/python" -m pip install -qq "${install_args[@]}" >&2
    touch "$venv/.complete"
  fi
  flock -u 9
fi
echo "$venv"
