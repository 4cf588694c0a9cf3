"""Forward+backward of a conv + LIF network over T steps: per step through bp.BPTT vs layer by
layer.

Prints a markdown table of median wall times (interleaved, after warm-up calls that compile) and the
ratio of each to the baseline, all measured side by side in this process.

    python benchmarks/layer_by_layer.py [--quick]
"""
import argparse
import contextlib
import io
import os

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
from conv_suite import measure

import bp_conv_ext

T, B, L, CIN, COUT, K = 100, 32, 140, 16, 64, 5


def loss_fun(predictions, targets):
    # Mean firing rate against a target rate: gradients flow through the LIF surrogate.
    return jnp.mean((jnp.mean(predictions, axis=(0, 1)) - targets) ** 2)


def network(conv_cls):
    mode = bm.TrainingMode()
    return bp_conv_ext.LayerByLayer(
        conv_cls(CIN, COUT, K, mode=mode),
        bp.dyn.Lif((L, COUT), keep_size=True, tau=1.0, V_th=0.5, spk_fun=bm.surrogate.arctan,
                   mode=mode),
        mode=mode)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer repeats')
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    rng = np.random.default_rng(0)
    # [B, T, L, C] spikes, already on the device for every contender
    xs = jnp.asarray(rng.random((B, T, L, CIN)) < 0.1, dtype=jnp.float32)
    target = jnp.full((L, COUT), 0.05)

    rows = []
    for label, conv_cls, how in [
        ('bp.BPTT, brainpy.dnn.Conv1d (per step)', bp.dnn.Conv1d, 'bptt'),
        ('bp.BPTT, bp_conv_ext.Conv1d (per step)', bp_conv_ext.Conv1d, 'bptt'),
        ('LayerByLayerTrainer, bp_conv_ext.Conv1d', bp_conv_ext.Conv1d, 'layerwise'),
    ]:
        bm.random.seed(0)
        net = network(conv_cls)
        if how == 'bptt':
            trainer = bp.BPTT(net, loss_fun=loss_fun, optimizer=bp.optim.SGD(lr=0.1),
                              progress_bar=False)
            # an iterator (no len) keeps BPTT from drawing a progress bar per call; its
            # report of each epoch is kept out of the table this script prints

            def run(trainer=trainer):
                with contextlib.redirect_stdout(io.StringIO()):
                    trainer.fit(iter([(xs, target)]), num_epoch=1)
        else:
            trainer = bp_conv_ext.LayerByLayerTrainer(net, loss_fun, bp.optim.SGD(lr=0.1))
            run = lambda trainer=trainer: trainer.step(xs, target)
        rows.append((label, run))

    medians = measure(dict(rows), repeats)      # interleaved, as in conv_suite
    rows = [(label, medians[label]) for label, _ in rows]
    base = rows[0][1]
    print(f"\nForward+backward+SGD step, T={T} B={B} L={L} {CIN}->{COUT} K={K} conv + LIF "
          f"(jax {jax.__version__}, brainpy {bp.__version__}, {os.cpu_count()} CPUs, "
          f"median of {repeats})\n")
    print("| execution | time (s) | speed-up vs first row |")
    print("| --- | ---: | ---: |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.3f} | {base / seconds:.1f}x |")


if __name__ == '__main__':
    main()
