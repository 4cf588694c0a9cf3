#!/bin/sh
# check_install.sh PYTHON BRAINPY: installs the package from this checkout (`pip install .`)
# and no constraints into a fresh environment of PYTHON, then checks that it got a BrainPy whose
# version starts with BRAINPY and that the package imports and finds its event kernels.
# Prints one line; on failure pip's log too. (`make test-install`.)
set -u
python=$1 brainpy=$2
env=$(mktemp -d)
trap 'rm -rf "$env"' EXIT
# A copy of what the package is built from, so that two checks can build at once.
mkdir "$env/src" && cp -r setup.cfg pyproject.toml README.md bp_conv_ext "$env/src/" &&
    find "$env/src" -name __pycache__ -prune -exec rm -rf {} +
if ! "$python" -m venv "$env/venv" > "$env/log" 2>&1 ||
   ! "$env/venv/bin/pip" install --quiet "$env/src" >> "$env/log" 2>&1; then
    grep -v 'is ignored' "$env/log" >&2
    echo "pip install . with $python: failed" >&2
    exit 1
fi
cd "$env" && venv/bin/python -W ignore -c "
import sys, brainpy, jax, bp_conv_ext
print(f'pip install . with Python {sys.version.split()[0]}: brainpy {brainpy.__version__}, '
      f'jax {jax.__version__}, event kernels {bp_conv_ext.event_kernel(\"cpu\")}')
assert brainpy.__version__.startswith('$brainpy'), f'expected BrainPy $brainpy, got {brainpy.__version__}'
"
