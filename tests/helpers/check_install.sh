#!/bin/sh
# check_install.sh PYTHON BRAINPY [wheel]: installs the package from this checkout (`pip install .`)
# and no constraints into a fresh environment of PYTHON, then checks that it got a BrainPy whose
# version starts with BRAINPY and that the package imports and finds its event kernels.
# Prints one line; on failure pip's log too. (`make test-install`.)
#
# With `wheel`, the release instead: `python -m build` makes the sdist and, from it, the wheel
# (build and twine in an environment of their own, at constraints/dev.txt's versions), `twine
# check --strict` checks both, and the wheel's file list is printed (it must hold every C++
# source of the package). The source tree is then removed and the wheel alone is installed
# into the fresh environment, whose event kernels must be the C++ ones, compiled from the
# wheel's sources into an empty cache; then the README's "Ten lines" examples run there
# (tests/helpers/readme_examples.py), each in a fresh interpreter.
set -u
python=$1 brainpy=$2 mode=${3:-source}
env=$(mktemp -d)
# The wheel check's lines are printed together when it ends, not between the other checks'.
trap '[ -e "$env/report" ] && cat "$env/report" >&3; rm -rf "$env"' EXIT
fail() {
    grep -v 'is ignored' "$env/log" >&2
    echo "$1" >&2
    exit 1
}
# A copy of what the package is built from, so that two checks can build at once.
mkdir "$env/src" && cp -r setup.cfg pyproject.toml README.md bp_conv_ext "$env/src/" &&
    find "$env/src" -name __pycache__ -prune -exec rm -rf {} +
: > "$env/log"
package=$env/src what=.
if [ "$mode" = wheel ]; then
    exec 3>&1 > "$env/report"
    cp README.md tests/helpers/readme_examples.py "$env/"
    { "$python" -m venv "$env/tools" &&
      "$env/tools/bin/pip" install --quiet -c constraints/dev.txt build twine &&
      "$env/tools/bin/python" -m build --outdir "$env/dist" "$env/src"; } >> "$env/log" 2>&1 ||
        fail "python -m build with $python: failed"
    "$env/tools/bin/twine" check --strict "$env"/dist/* >> "$env/log" 2>&1 ||
        fail "twine check --strict: failed"
    package=$(ls "$env"/dist/*.whl) what=$(basename "$package")
    echo "python -m build with Python $("$python" -c 'import platform; print(platform.python_version())'):" \
        "$(cd "$env/dist" && ls | tr '\n' ' ')(twine check --strict: passed); the wheel holds:"
    "$env/tools/bin/python" -m zipfile -l "$package" | tee "$env/files"
    missing=$(cd "$env/src" && find bp_conv_ext -name '*.cc' -o -name '*.h' | while read -r f; do
        awk '{print $1}' "$env/files" | grep -qxF "$f" || echo "$f"; done)
    [ -z "$missing" ] || fail "the wheel lacks the C++ sources: $missing"
    rm -rf "$env/src" "$env/tools"
    mkdir "$env/cache"
fi
if ! "$python" -m venv "$env/venv" >> "$env/log" 2>&1 ||
   ! "$env/venv/bin/pip" install --quiet "$package" >> "$env/log" 2>&1; then
    fail "pip install $what with $python: failed"
fi
cd "$env" || exit 1
if [ "$mode" = wheel ]; then
    export BP_CONV_EXT_CACHE="$env/cache"
fi
venv/bin/python -W ignore -c "
import os, sys, brainpy, jax, bp_conv_ext
kernels = bp_conv_ext.event_kernel('cpu')
print(f'pip install $what with Python {sys.version.split()[0]}: '
      f'bp_conv_ext {bp_conv_ext.__version__}, brainpy {brainpy.__version__}, '
      f'jax {jax.__version__}, event kernels {kernels}')
assert brainpy.__version__.startswith('$brainpy'), f'expected BrainPy $brainpy, got {brainpy.__version__}'
if '$mode' == 'wheel':
    assert bp_conv_ext.__file__.startswith(sys.prefix), f'imported from {bp_conv_ext.__file__}'
    assert kernels == 'c++', f'the C++ kernels did not build from the wheel: {kernels}'
    print('  C++ kernels built from the wheel into an empty cache:', *sorted(os.listdir('cache')))
" || exit 1
if [ "$mode" = wheel ]; then
    venv/bin/python readme_examples.py README.md 'Ten lines' || exit 1
fi
