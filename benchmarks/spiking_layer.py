"""A spiking convolution layer (Conv1d -> LIF) on a GPU: the fused kernel against cuDNN's
convolution followed by XLA's neuron update, side by side in one run.

    python benchmarks/spiking_layer.py [--quick] [--dry-run]

For each shape and dtype, over T = 100 steps of ``bool`` spikes (density 0.05; neither the
dense convolutions nor the fused kernel depend on it):

- ``lax step``: per step inside ``lax.scan``, ``lax.conv_general_dilated`` (cuDNN) then the
  LIF update (one XLA fusion); ``fused step``: per step inside ``lax.scan``, the fused kernel
  on a sequence of one step;
- ``folded``: the convolution folded over the sequence (one call), then the neurons in a
  scan (``conv_lif(kernels='jax')``); ``fused seq``: the fused kernel over the whole
  sequence, the neurons' state kept on chip: the Mosaic GPU kernel on Hopper GPUs where it
  runs the problem (``kernels='mosaic'``, the measurement the default choice waits for before
  it takes that kernel), else the Triton one; the ``kernel`` column names it; ``triton seq``:
  the Triton kernel (what the default takes on every CUDA GPU), to compare the two;
- ``grad``: a training step's kernel gradient through each of the two sequence forms.

Also the spikes that differ between the fused kernel and the unfused layer, the temporary
memory XLA plans for each program (``memory_analysis``) and the device's peak.
``--dry-run`` rehearses it on the CPU with tiny shapes (the kernel in Pallas's interpreter).
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bp_conv_ext.ops import fused as _fused

#: (name, batch, length, in, out, kernel, dtype)
SHAPES = [
    ('B256 L140 64->64 K5', 256, 140, 64, 64, 5, 'float32'),
    ('B256 L140 64->128 K3', 256, 140, 64, 128, 3, 'float32'),
    ('B256 L700 16->64 K5', 256, 700, 16, 64, 5, 'float32'),
    ('B256 L140 128->256 K3', 256, 140, 128, 256, 3, 'float32'),
    ('B32 L140 64->64 K7', 32, 140, 64, 64, 7, 'float32'),
    ('B256 L140 64->128 K3', 256, 140, 64, 128, 3, 'bfloat16'),
    ('B256 L700 16->64 K5', 256, 700, 16, 64, 5, 'bfloat16'),
]
DRY_SHAPES = [('B16 L12 3->32 K3', 16, 12, 3, 32, 3, 'float32')]
STEPS, DENSITY = 100, 0.05


def median_seconds(fn, repeats):
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def temp_mib(jitted, *args):
    try:
        return jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes / 2 ** 20
    except Exception:          # not every backend reports it
        return float('nan')


def contenders(xs, w, b, v0, lif, kernel_size):
    pad = ((kernel_size - 1) // 2, kernel_size // 2)

    def lax_step(xs, w, b, v0):
        def step(v, x):
            current = lax.conv_general_dilated(x.astype(w.dtype), w, (1,), [pad],
                                               dimension_numbers=('NWC', 'WIO', 'NWC')) + b
            spike, v = _fused.lif_update(v, current, lif)
            return v, spike.astype(v.dtype)
        v, spikes = lax.scan(step, v0, xs)
        return spikes, v

    def fused_step(xs, w, b, v0):
        def step(v, x):
            spikes, v = _fused.conv_lif(x[None], w, b, v, lif, kernels='triton')
            return v, spikes[0]
        v, spikes = lax.scan(step, v0, xs)
        return spikes, v

    def sequence(kernels):
        return lambda xs, w, b, v0: _fused.conv_lif(xs, w, b, v0, lif, kernels=kernels)

    forward = {'lax step': lax_step, 'fused step': fused_step, 'folded': sequence('jax'),
               'fused seq': sequence(measured(xs, w, v0)), 'triton seq': sequence('triton')}

    def grad_of(f):
        return jax.grad(lambda w, xs, b, v0: jnp.sum(f(xs, w, b, v0)[1].astype(jnp.float32)
                                                     ** 2))

    calls = {name: jax.jit(f) for name, f in forward.items()}
    grads = {'grad folded': jax.jit(grad_of(forward['folded'])),
             'grad fused': jax.jit(grad_of(forward['fused seq']))}
    return calls, grads


def measured(xs, w, v0):
    """The kernels ``fused seq`` times: the Mosaic GPU kernel on Hopper GPUs where it runs
    the problem, else the Triton kernel."""
    hopper = _fused.compute_capability()[0] == 9
    return 'mosaic' if hopper and _fused.choose_kernel('mosaic', xs, w, v0) else 'triton'


def row(name, batch, length, cin, cout, k, dtype, *, steps, repeats, rng):
    """One line of the table."""
    dtype = jnp.dtype(dtype)
    xs = jnp.asarray(rng.random((steps, batch, length, cin)) < DENSITY)
    w = jnp.asarray(rng.standard_normal((k, cin, cout)) * (4 / np.sqrt(k * cin * DENSITY)),
                    dtype)
    b = jnp.zeros((cout,), dtype)
    v0 = jnp.zeros((batch, length, cout), dtype)
    lif = _fused.LIF.make(tau=10., dt=1., v_th=1.)
    calls, grads = contenders(xs, w, b, v0, lif, k)
    operands = (xs, w, b, v0)
    t = {n: median_seconds(lambda f=f: f(*operands), repeats) * 1e3
         for n, f in calls.items()}
    g = {n: median_seconds(lambda f=f: f(w, xs, b, v0), repeats) * 1e3
         for n, f in grads.items()}
    fused, folded = calls['fused seq'](*operands), calls['folded'](*operands)
    differ = int(jnp.sum(fused[0] != folded[0]))
    temps = ' / '.join(f"{temp_mib(calls[n], *operands):.0f}"
                       for n in ('lax step', 'folded', 'fused seq'))
    # What bounds the fused kernel: its bytes (one-byte spikes in, spikes out in the state's
    # dtype) and multiply-adds against its time.
    moved = xs.size + fused[0].size * dtype.itemsize
    flops = 2 * steps * batch * length * cin * cout * k
    kernel = _fused.choose_kernel(measured(xs, w, v0), xs, w, v0)
    return (f"| {name} | {dtype.name} | {t['lax step']:.2f} | {t['fused step']:.2f} | "
            f"{t['folded']:.2f} | {t['fused seq']:.2f} | {kernel} | {t['triton seq']:.2f} | "
            f"{t['lax step'] / t['fused seq']:.2f}x | {t['folded'] / t['fused seq']:.2f}x | "
            f"{g['grad folded']:.2f} | {g['grad fused']:.2f} | "
            f"{differ} of {fused[0].size} ({float(jnp.mean(folded[0])):.3f} spiking) | "
            f"{temps} | {moved / t['fused seq'] / 1e6:.0f} GB/s, "
            f"{flops / t['fused seq'] / 1e9:.1f} TFLOP/s |")


#: Tiles ``(batch rows, output channels, warps)`` of the Triton kernel measured by ``--tiles``.
TILES = [(64, 128, 4), (64, 128, 8), (32, 128, 4), (32, 128, 8), (64, 64, 4), (32, 64, 4),
         (16, 64, 4), (16, 32, 4)]


def tiles_table(shapes, steps, repeats, rng):
    """Print the Triton sequence kernel's time with each tile of :data:`TILES` that fits."""
    print("| shape | dtype | rows x channels, warps | fused seq (ms) |\n| --- | --- | --- | ---: |")
    for name, batch, length, cin, cout, k, dtype in shapes:
        xs = jnp.asarray(rng.random((steps, batch, length, cin)) < DENSITY)
        w = jnp.asarray(rng.standard_normal((k, cin, cout)) / np.sqrt(k * cin), dtype)
        b, v0 = jnp.zeros((cout,), dtype), jnp.zeros((batch, length, cout), dtype)
        lif = _fused.LIF.make(tau=10., dt=1., v_th=1.)
        pads = ((k - 1) // 2, k // 2)
        for rows, channels, warps in TILES:
            if batch % rows or cout % channels:
                continue
            f = jax.jit(lambda xs, w, b, v0, tiles=(rows, channels, warps): _fused.pallas_sequence(
                xs, w, b, v0, lif, pads, 1, 'triton', tiles=tiles))
            try:
                ms = f"{median_seconds(lambda: f(xs, w, b, v0), repeats) * 1e3:.2f}"
            except Exception as error:
                ms = f"failed: {type(error).__name__}"
            print(f"| {name} | {dtype} | {rows} x {channels}, {warps} | {ms} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer repeats')
    parser.add_argument('--dry-run', action='store_true',
                        help='tiny shapes on the CPU (the kernel interpreted)')
    parser.add_argument('--tiles', action='store_true',
                        help="also time the Triton kernel's tiles on the 64- to 256-channel shapes")
    args = parser.parse_args()
    if not args.dry_run and jax.default_backend() != 'gpu':
        parser.error("needs JAX on a CUDA GPU (or --dry-run)")
    shapes, steps = (DRY_SHAPES, 3) if args.dry_run else (SHAPES, STEPS)
    repeats = 1 if args.dry_run else 5 if args.quick else 15
    rng = np.random.default_rng(0)
    print(f"# Conv1d -> LIF, T={steps}, p={DENSITY}, on {jax.devices()[0].device_kind}, "
          f"jax {jax.__version__}, matmul precision {jax.config.jax_default_matmul_precision}")
    print("| shape | dtype | lax step (ms) | fused step (ms) | folded (ms) | fused seq (ms) | "
          "kernel | triton seq (ms) | lax step / fused seq | folded / fused seq | "
          "grad folded (ms) | grad fused (ms) | spikes differing | "
          "temp MiB lax step / folded / fused seq | fused seq achieved |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: |")
    for shape in shapes:
        try:
            print(row(*shape, steps=steps, repeats=repeats, rng=rng), flush=True)
        except Exception as error:          # one shape's failure does not hide the others
            print(f"| {shape[0]} | {shape[-1]} | failed: {type(error).__name__}: "
                  f"{str(error).splitlines()[0][:300]} |", flush=True)
    if args.tiles:
        print("\n## The Triton kernel's tiles\n")
        tiles_table(shapes if args.dry_run else SHAPES[:2] + SHAPES[3:4], steps, repeats, rng)
    stats = jax.devices()[0].memory_stats() or {}
    print(f"\npeak GiB in use: {stats.get('peak_bytes_in_use', 0) / 2 ** 30:.2f}")


if __name__ == '__main__':
    main()
