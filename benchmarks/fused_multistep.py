"""LayerByLayer.multi_step with the fused spiking step (fuse=True) and without, side by side.

A Conv1d -> bp.dyn.Lif -> Flatten -> Dense network in TrainingMode over T steps: the forward
pass and the gradients of a training loss, on bool spikes (p = 0.05) and on float inputs.
Prints the best of five interleaved calls of each (after a call that compiles) and the ratio
unfused / fused. On the CPU the fused step computes what the two layers compute (the
convolution folded over time, then the neurons in a scan), so the ratios measure only the
difference between the two loops; on CUDA GPUs it is one kernel.

    python benchmarks/fused_multistep.py
"""
import time

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np

from bp_conv_ext import Conv1d, LayerByLayer

T, B, L, CIN, COUT, K = 50, 32, 140, 16, 64, 5


def main():
    mode = bm.TrainingMode()
    net = LayerByLayer(
        Conv1d(CIN, COUT, K, mode=mode),
        bp.dyn.Lif((L, COUT), keep_size=True, V_th=0.5, tau=2., mode=mode),
        bp.dnn.Flatten(mode=mode), bp.dnn.Dense(L * COUT, 2, mode=mode), mode=mode)
    variables = net.train_vars().unique()
    rng = np.random.default_rng(0)
    inputs = {'spikes p=0.05': jnp.asarray(rng.random((T, B, L, CIN)) < 0.05),
              'floats': jnp.asarray(rng.random((T, B, L, CIN)), jnp.float32)}
    print(f"T={T} B={B} L={L} {CIN}->{COUT} K={K}, TrainingMode (jax {jax.__version__}, "
          f"brainpy {bp.__version__}, {jax.default_backend()})\n")
    print("| input | pass | fused (ms) | unfused (ms) | unfused / fused |")
    print("| --- | --- | ---: | ---: | ---: |")
    for kind, xs in inputs.items():
        calls = {}
        for fuse in (True, False):
            def loss(xs, fuse=fuse):
                return jnp.sum(net.multi_step(xs, fuse=fuse))
            calls[('forward', fuse)] = bm.jit(lambda xs, fuse=fuse: net.multi_step(xs, fuse=fuse))
            calls[('gradients', fuse)] = bm.jit(bm.grad(loss, grad_vars=variables))
        best = {}
        for key, call in calls.items():
            jax.block_until_ready(call(xs))
            best[key] = float('inf')
        for _ in range(5):
            for key, call in calls.items():
                start = time.perf_counter()
                jax.block_until_ready(call(xs))
                best[key] = min(best[key], time.perf_counter() - start)
        for name in ('forward', 'gradients'):
            fused, unfused = best[(name, True)], best[(name, False)]
            print(f"| {kind} | {name} | {fused * 1e3:.1f} | {unfused * 1e3:.1f} | "
                  f"{unfused / fused:.2f} |")


if __name__ == '__main__':
    main()
