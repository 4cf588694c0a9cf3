"""How much GPU memory the training programs of a Conv1d take, and which operation takes it.

    python benchmarks/gpu_memory.py [--dry-run]

Each variant runs in a fresh process (a device's peak only grows): the gradient of a loss over
``T=100`` steps of ``B32 L140 16->64 K5`` float input, per step (``bp.BPTT``'s pattern) or
folded (``Conv1d.multi_step`` then a leaky ``lax.scan``: the layer-by-layer pattern), with
each dense algorithm and kernel-gradient form, and each direction alone. Printed per variant:
the device's peak after compiling and after running, the temporary memory XLA plans
(``memory_analysis``), the time of one call, and the convolution custom calls of the compiled
program with the scratch space each was given. ``--dry-run`` rehearses it on the CPU.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

STEPS, BATCH, LENGTH, CIN, COUT, K = 100, 32, 140, 16, 64, 5

#: name -> (what is differentiated, dense algorithm, kernel-gradient form, extra XLA flags);
#: 'layer' is the library's own choice (Conv1d.multi_step / the layer per step).
VARIANTS = {
    'per-step layer': ('per-step', 'layer', None, ''),
    'folded layer': ('folded w', 'layer', None, ''),
    'folded layer, autotune off': ('folded w', 'layer', None, '--xla_gpu_autotune_level=0'),
    'folded forward xla': ('folded forward', 'xla', 'xla', ''),
    'folded dx xla': ('folded x', 'xla', 'xla', ''),
    'folded dw xla/xla': ('folded w', 'xla', 'xla', ''),
    'folded dw xla/im2col': ('folded w', 'xla', 'im2col', ''),
    'folded dw im2col/im2col': ('folded w', 'im2col', 'im2col', ''),
}


def run_variant(name, dry_run):
    import brainpy.math as bm
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    import bp_conv_ext
    from bp_conv_ext.core import dense as _dense

    what, algorithm, kernel_grad, _ = VARIANTS[name]
    steps, batch = (3, 2) if dry_run else (STEPS, BATCH)
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.random((steps, batch, LENGTH, CIN)) < 0.1, jnp.float32)
    w = jnp.asarray(rng.standard_normal((K, CIN, COUT)) / np.sqrt(K * CIN), jnp.float32)
    if algorithm == 'layer':
        layer = bp_conv_ext.Conv1d(CIN, COUT, K, w_initializer=np.asarray(w),
                                   b_initializer=None, mode=bm.TrainingMode())

        def conv(w, x):
            layer.w.value = w
            return layer(x)

        def folded(w, xs):
            layer.w.value = w
            return layer.multi_step(xs)
    else:
        spec = _dense.ConvSpec(1, ((K - 1) // 2, K // 2), 1, 1, 1, algorithm, kernel_grad)

        def folded(w, xs):
            y = _dense.conv(xs.reshape((-1,) + xs.shape[2:]), w, spec)
            return y.reshape(xs.shape[:2] + y.shape[1:])

    def leaky(ys):
        def step(v, y):
            v = 0.9 * v + y
            return v, jnp.tanh(v)
        return jnp.mean(lax.scan(step, jnp.zeros(ys.shape[1:]), ys)[1] ** 2)

    if what == 'per-step':
        def loss(w, xs):
            def step(v, x):
                v = 0.9 * v + conv(w, x)
                return v, jnp.tanh(v)
            return jnp.mean(lax.scan(step, jnp.zeros((batch, LENGTH, COUT)), xs)[1] ** 2)
        f = jax.jit(jax.grad(loss))
    elif what == 'folded forward':
        f = jax.jit(lambda w, xs: leaky(folded(w, xs)))
    else:
        f = jax.jit(jax.grad(lambda w, xs: leaky(folded(w, xs)),
                             argnums=0 if what == 'folded w' else 1))
    device = jax.devices()[0]

    def peak():
        return (device.memory_stats() or {}).get('peak_bytes_in_use', 0) / 2 ** 30

    compiled = f.lower(w, xs).compile()
    after_compile = peak()
    analysis = compiled.memory_analysis()
    temp = getattr(analysis, 'temp_size_in_bytes', 0) / 2 ** 30 if analysis else float('nan')
    convs = []
    for line in compiled.as_text().splitlines():
        target = re.search(r'custom_call_target="(__cudnn\$[\w]+)"', line)
        if target:
            scratch = re.search(r'u8\[(\d+)\]', line)
            convs.append((target.group(1), int(scratch.group(1)) if scratch else 0))
    jax.block_until_ready(compiled(w, xs))
    start = time.perf_counter()
    jax.block_until_ready(compiled(w, xs))
    seconds = time.perf_counter() - start
    print(json.dumps(dict(variant=name, compile_peak_gib=after_compile, run_peak_gib=peak(),
                          temp_gib=temp, ms=seconds * 1e3,
                          convs=[f"{t} scratch {s / 2 ** 20:.1f} MiB" for t, s in convs])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dry-run', action='store_true', help='small shapes on the CPU')
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return run_variant(args.variant, args.dry_run)
    arrays_gib = STEPS * BATCH * LENGTH * (CIN + COUT) * 4 / 2 ** 30
    print(f"# T={STEPS} B{BATCH} L{LENGTH} {CIN}->{COUT} K{K}: input and output sequences "
          f"{arrays_gib:.2f} GiB together")
    print("| variant | peak after compile (GiB) | peak after run (GiB) | planned temp (GiB) | "
          "ms | convolutions (scratch) | XLA's memory warnings |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for name, (*_, flags) in VARIANTS.items():
        env = dict(os.environ)
        if flags:
            env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + flags).strip()
        command = [sys.executable, __file__, '--variant', name] + (['--dry-run'] * args.dry_run)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        lines = [line for line in done.stdout.splitlines() if line.startswith('{')]
        if done.returncode or not lines:
            print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1:]} |", flush=True)
            continue
        r = json.loads(lines[-1])
        warnings = [re.sub(r'^.*\] ', '', line)[:160] for line in done.stderr.splitlines()
                    if 'GiB' in line and ('rematerialization' in line or 'llocat' in line)]
        print(f"| {name} | {r['compile_peak_gib']:.2f} | {r['run_peak_gib']:.2f} | "
              f"{r['temp_gib']:.2f} | {r['ms']:.1f} | {'; '.join(r['convs']) or 'none'} | "
              f"{'; '.join(warnings) or 'none'} |",
              flush=True)


if __name__ == '__main__':
    main()
