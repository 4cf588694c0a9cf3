"""Train the GunPoint spiking CNN here, export it to NIR, reload it, and run it in SpikingJelly.

The network of ``gunpoint.py`` with hard-reset neurons (NIR's LIF sets a neuron that spikes to
``v_reset``)::

    Conv1d(1->32, K=7) -> LIF -> AvgPool(2) -> Conv1d(32->32, K=5) -> LIF -> AvgPool(2)
    -> Flatten -> Dense(->2)

is trained layer by layer (the recipe of ``gunpoint.py``), written with
``bp_conv_ext.to_nir`` and ``nir.write`` (the pooling layers become depthwise ``Conv1d``
nodes: NIR has no 1-D pooling), read back with ``bp_conv_ext.from_nir`` (classic API) and
``bp_conv_ext.state.from_nir`` (brainpy.state, where brainstate is installed), and its test
set predicted by each. Where SpikingJelly 2.0 is installed (``pip install
'bp_conv_ext[peers]'``, with PyTorch), the network is also exported for it
(``dt=1e-4`` s, ``integrator='euler'``, groups expanded, as its reader needs) and run there.

Writes ``gunpoint.nir`` and ``nir_export.json`` (accuracies, the largest output differences,
the graph's nodes) to ``--out``.

    python examples/nir_export.py [--quick] [--epochs N] [--seed S] [--out DIR]
"""
import json
import os
import sys

import brainpy.math as bm
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gunpoint import (
    LENGTH,
    arguments,
    build_network,
    encoded_data,
    loss_fun,
    make_optimizer,
    run_epochs,
    training_options,
)

import bp_conv_ext

PEER_DT = 1e-4       # SpikingJelly's NIR time step, in seconds


def train(data, epochs, batch_size, seed, eval_every):
    """The hard-reset network trained layer by layer; returns it and its test outputs."""
    bm.clear_name_cache()
    bm.random.seed(seed)
    net = build_network(spk_reset='hard')
    trainer = bp_conv_ext.LayerByLayerTrainer(net, loss_fun, make_optimizer(epochs))
    (x_train, y_train), (x_test, y_test) = data['train'], data['test']
    run_epochs('layer by layer', lambda b: trainer.fit(b, num_epoch=1, progress_bar=False)[-1],
               lambda: accuracy(outputs(net, x_test), y_test), x_train, y_train, epochs,
               batch_size, seed, eval_every, lambda epoch: None)
    return net


def outputs(net, x):
    """A classic network's outputs ``[N, T, 2]`` on encoded series ``[N, T, L, 1]``."""
    return np.swapaxes(np.asarray(net.multi_step(jnp.swapaxes(jnp.asarray(x), 0, 1))), 0, 1)


def accuracy(out, y) -> float:
    return float((out.mean(axis=1).argmax(-1) == y).mean())


def state_outputs(path, x):
    """The graph imported into brainpy.state; its outputs, or None without brainstate."""
    try:
        import brainstate
        import brainunit as u

        import bp_conv_ext.state
    except ImportError:
        return None
    with brainstate.environ.context(dt=bm.get_dt() * u.ms):
        net = bp_conv_ext.state.from_nir(path)
        brainstate.nn.init_all_states(net, len(x))
        out = net.multi_step(jnp.swapaxes(jnp.asarray(x), 0, 1))
    return np.swapaxes(np.asarray(u.get_mantissa(out)), 0, 1)


def peer_outputs(net, x):
    """The network exported for SpikingJelly and run there step by step; None where it is
    not installed."""
    try:
        import torch
        from spikingjelly.activation_based.nir_exchange import import_from_nir
    except ImportError:
        return None
    graph = bp_conv_ext.to_nir(net, (LENGTH, 1), dt=PEER_DT, integrator='euler',
                               expand_groups=True)
    peer = import_from_nir(graph, dt=PEER_DT)
    state, steps = None, []
    with torch.no_grad():
        for x_t in np.swapaxes(np.swapaxes(x, -1, -2), 0, 1):      # [T, N, 1, L]
            y, state = peer(torch.from_numpy(np.ascontiguousarray(x_t)), state)
            steps.append(y.numpy())
    return np.swapaxes(np.stack(steps), 0, 1)


def versions() -> dict:
    """The versions of what the outputs came from (None: not installed)."""
    from importlib import metadata
    found = {}
    for name in ('brainpy', 'jax', 'nir', 'torch', 'spikingjelly'):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def main(argv=None):
    import nir
    args, epochs = arguments(argv, __doc__.splitlines()[0], 'nir_export')
    options = training_options(args, epochs)
    data = encoded_data(args)
    net = train(data, **options)
    x_test, y_test = data['test']
    ours = outputs(net, x_test)

    path = os.path.join(args.out, 'gunpoint.nir')
    graph = bp_conv_ext.to_nir(net, (LENGTH, 1))
    nir.write(path, graph)
    bm.clear_name_cache()
    reloaded = outputs(bp_conv_ext.from_nir(path, mode=bm.TrainingMode()), x_test)
    runs = {'here': ours, 'reloaded (classic)': reloaded,
            'reloaded (brainpy.state)': state_outputs(path, x_test),
            'SpikingJelly': peer_outputs(net, x_test)}

    report = {'command': ' '.join(['python examples/nir_export.py'] +
                                  list(sys.argv[1:] if argv is None else argv)),
              'versions': versions(), 'epochs': epochs, 'seed': args.seed, 'graph': path,
              'nodes': {name: type(node).__name__ for name, node in graph.nodes.items()},
              'test_accuracy': {}, 'largest_output_difference': {}}
    print(f"\nNIR graph {path}: " + ' -> '.join(report['nodes'].values()))
    for name, out in runs.items():
        if out is None:
            print(f"  {name:>25}: not installed")
            continue
        report['test_accuracy'][name] = accuracy(out, y_test)
        report['largest_output_difference'][name] = float(np.max(np.abs(out - ours)))
        print(f"  {name:>25}: test accuracy {report['test_accuracy'][name]:.3f}, largest "
              f"output difference from the trained network "
              f"{report['largest_output_difference'][name]:.2e}")
    report['report'] = os.path.join(args.out, 'nir_export.json')
    with open(report['report'], 'w') as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == '__main__':
    main()
