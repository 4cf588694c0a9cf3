#!/usr/bin/env bash
# The GPU checks in one command, on a bare CUDA machine with JAX (its own jax and CUDA
# plugins), run from the repository's root:
#
#   bash benchmarks/gpu_check.sh [--dry-run] [WHEELS]
#
# 1. installs the pure-Python wheels in WHEELS (default .whl; the BrainPy stack the machine
#    lacks, downloaded beforehand: see docs/accelerators.md) into /tmp/site;
# 2. the training programs' GPU memory, variant by variant (benchmarks/gpu_memory.py);
# 3. the spiking layer, fused kernel against cuDNN + XLA (benchmarks/spiking_layer.py);
# 4. the tests that concern GPUs (the Pallas kernels, lowering, the fused layer);
# 5. the benchmark suite's GPU tables (benchmarks/conv_suite.py --gpu --quick).
#
# Each step has its own time limit and a failed step does not stop the next; everything is
# written under $OUT (default: a new temporary folder), one file per step. With --dry-run
# the same steps run on the CPU with tiny shapes (the tests only collected, the suite's
# options only parsed, the wheels only checked against Python 3.12), in about a minute.
set -uo pipefail
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
wheels=${1:-.whl}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}

step() {   # step NAME SECONDS COMMAND...: run it, its output to the screen and $OUT/NAME
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name (at most ${limit} s)"
    timeout "$limit" "$@" 2>&1 | grep -v -e 'DeprecationWarning' -e '^  warnings.warn' \
        | tee "$OUT/$name"
    echo "== $name: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s"
}

if [ $dry -eq 1 ]; then
    export JAX_PLATFORMS=cpu
    site=$(mktemp -d)
else
    site=/tmp/site
fi
if ls "$wheels"/*.whl >/dev/null 2>&1; then
    if [ $dry -eq 1 ]; then   # only whether they install on the GPU machine's Python 3.12
        $python -m pip install -q --dry-run --no-index --no-deps --only-binary=:all: \
            --python-version 3.12 --target "$site" "$wheels"/*.whl || exit 3
    else
        $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "$wheels"/*.whl || exit 3
        export PYTHONPATH="$PYTHONPATH:$site"
    fi
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
        || echo "no nvidia-smi"
    $python -c "import jax, brainpy; print('jax', jax.__version__, 'brainpy', brainpy.__version__, jax.devices())"
} 2>&1 | tee "$OUT/machine"

# STEPS (default: all four) chooses steps by name, to fit a shorter lease.
wanted=" ${STEPS:-memory spiking tests suite} "
tests="tests/event/test_gpu_kernels.py tests/ops/test_fused.py tests/event/test_backends.py"
selection="event or gpu or pallas or fused"
if [ $dry -eq 1 ]; then
    [[ $wanted == *" memory "* ]] && step memory.md 300 $python benchmarks/gpu_memory.py --dry-run
    [[ $wanted == *" spiking "* ]] && step spiking_layer.md 120 $python benchmarks/spiking_layer.py --dry-run --tiles
    [[ $wanted == *" tests "* ]] && step pytest.log 120 $python -m pytest -q -p no:cacheprovider \
        --collect-only $tests -k "$selection"
    [[ $wanted == *" suite "* ]] && step suite.md 60 $python benchmarks/conv_suite.py --help
else
    [[ $wanted == *" memory "* ]] && step memory.md 110 $python benchmarks/gpu_memory.py
    [[ $wanted == *" spiking "* ]] && step spiking_layer.md 170 $python benchmarks/spiking_layer.py --quick --tiles
    # Several test processes share the GPU: none takes the usual 75 % of its memory up front.
    [[ $wanted == *" tests "* ]] && step pytest.log 80 env XLA_PYTHON_CLIENT_PREALLOCATE=false \
        $python -m pytest -q -p no:cacheprovider -n 4 $tests -k "$selection"
    [[ $wanted == *" suite "* ]] && step suite.md 150 $python benchmarks/conv_suite.py --gpu --quick
fi
echo "results in $OUT"
