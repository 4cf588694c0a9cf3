"""What changes XLA's float32 results on this CPU: the instruction set it may use, or the cores.

Runs the operations that dominate the GunPoint training step (a matrix product, a 1-D
convolution and its weight gradient, a reduction) in fresh processes under each setting and
prints the largest absolute difference of each result from the default run's, as a markdown
table. A setting that gives 0 everywhere does not change the rounding of these operations.

    python benchmarks/rounding.py [--out FILE.md]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

OPERATIONS = ('matmul', 'conv', 'conv weight gradient', 'sum')

SETTINGS = [
    ('default', {}, []),
    ('XLA_FLAGS=--xla_cpu_max_isa=AVX2', {'XLA_FLAGS': '--xla_cpu_max_isa=AVX2'}, []),
    ('XLA_FLAGS=--xla_cpu_max_isa=SSE4_2', {'XLA_FLAGS': '--xla_cpu_max_isa=SSE4_2'}, []),
    ('one core (taskset -c 0)', {}, ['taskset', '-c', '0']),
]


def compute(path):
    """Run the operations once and save their results to ``path``."""
    import jax
    import jax.numpy as jnp
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((512, 2048)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((2048, 512)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 32, 32)), jnp.float32)
    xs = jnp.asarray(rng.standard_normal((80, 75, 32)), jnp.float32)   # [T * B, H, C]

    def conv(w):
        return jax.lax.conv_general_dilated(xs, w, (1,), 'SAME',
                                            dimension_numbers=('NWC', 'WIO', 'NWC'))

    results = {'matmul': jax.jit(jnp.matmul)(a, b), 'conv': jax.jit(conv)(w),
               'conv weight gradient': jax.jit(jax.grad(lambda w: jnp.sum(conv(w) ** 2)))(w),
               'sum': jax.jit(lambda x: jnp.sum(jnp.tanh(x), axis=0))(a)}
    np.savez(path, **{k: np.asarray(v) for k, v in results.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', help='also write the table to this markdown file')
    parser.add_argument('--compute', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compute:
        return compute(args.compute)

    folder, rows = tempfile.mkdtemp(), []
    try:
        results = {}
        for name, env, prefix in SETTINGS:
            if prefix and shutil.which(prefix[0]) is None:
                continue
            path = os.path.join(folder, f'{len(results)}.npz')
            subprocess.run(prefix + [sys.executable, os.path.abspath(__file__), '--compute', path],
                           env={**os.environ, **env}, check=True)
            results[name] = np.load(path)
        reference = results['default']
        for name, result in results.items():
            if name != 'default':
                rows.append([f'`{name}`'] + [f"{np.abs(result[k] - reference[k]).max():.2g}"
                                             for k in OPERATIONS])
    finally:
        shutil.rmtree(folder)
    import jax
    lines = ['| setting | ' + ' | '.join(OPERATIONS) + ' |',
             '|' + ' --- |' * (1 + len(OPERATIONS))]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                    'examples'))
    from gunpoint import machine
    m = machine()
    lines += ['', f"Largest absolute difference from the default run (float32, in fresh "
                  f"processes). {m['cpu']}, {m['cores']} cores, "
                  f"{'AVX-512' if m['avx512f'] else 'no AVX-512'}, JAX {jax.__version__}; "
                  f"`{' '.join(['python', 'benchmarks/rounding.py'] + (argv or sys.argv[1:]))}`."]
    table = '\n'.join(lines) + '\n'
    print(table)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table)


if __name__ == '__main__':
    main()
