"""GunPoint over several seeds: the test accuracy of both trainers and how far they drift apart.

For every seed the example's network is built once per trainer from the same initial weights and
trained with the example's recipe (``examples/gunpoint.py``, ``RECIPE``) per step and layer by
layer, on the same batches. The two loops compute the same function; what separates them is
float32 rounding (the order of the sums differs), which the spike thresholds amplify. Printed
and written for each seed: the final test accuracy of both trainers, the largest difference of
their training loss over the epochs, and the largest difference of their parameters after 1,
10 and 100 epochs and at the end; then the mean, minimum and spread of the accuracies.

    python benchmarks/gunpoint_seeds.py [--seeds N] [--epochs N] [--api classic|state] [--out DIR]

Writes ``DIR/gunpoint_seeds.json`` and the markdown table ``DIR/gunpoint_seeds.md``
(``gunpoint_state_seeds.*`` with ``--api state``).
"""
import argparse
import contextlib
import datetime
import json
import os
import shlex
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                'examples'))
import gunpoint

METHODS = {'per step': 'per_step', 'layer by layer': 'layer_by_layer'}
SNAPSHOTS = (1, 10, 100)


def parameter_difference(a: dict, b: dict) -> dict:
    """The largest absolute difference of two parameter sets, and that relative to the
    largest parameter."""
    if a.keys() != b.keys():
        raise RuntimeError(f"the two trainers' parameters differ in name: {sorted(a)} vs "
                           f"{sorted(b)}")
    largest = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    scale = max(float(np.abs(a[k]).max()) for k in a)
    return {'max_abs': largest, 'relative': largest / scale}


def one_seed(module, data, seed, epochs):
    """Train both loops from ``seed``; returns their outcome and the drift between them."""
    snapshot_epochs = sorted({e for e in SNAPSHOTS if e <= epochs} | {epochs})
    snapshots, outcome = {}, {}
    for method, key in METHODS.items():
        snapshots[key] = {}

        def on_epoch(epoch, model, store=snapshots[key]):
            if epoch in snapshot_epochs:
                store[epoch] = module.parameters(model)

        result = module.train(method, data, epochs, gunpoint.RECIPE['batch_size'], seed,
                              eval_every=epochs, on_epoch=on_epoch)
        history, seconds = result[-2:]
        outcome[key] = {'test_accuracy': history['test_accuracy'][-1],
                        'final_training_loss': history['loss'][-1], 'seconds': seconds,
                        'training_loss': history['loss']}
    a, b = (outcome[key] for key in METHODS.values())
    drift = {
        'test_accuracy': abs(a['test_accuracy'] - b['test_accuracy']),
        'training_loss_max_abs': float(np.max(np.abs(np.subtract(a['training_loss'],
                                                                 b['training_loss'])))),
        'training_loss_first_epoch': abs(a['training_loss'][0] - b['training_loss'][0]),
        'parameters': {str(e): parameter_difference(snapshots['per_step'][e],
                                                    snapshots['layer_by_layer'][e])
                       for e in snapshot_epochs},
    }
    return {'seed': seed, **outcome, 'drift': drift}


def statistics(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {'mean': float(values.mean()), 'min': float(values.min()),
            'max': float(values.max()), 'spread': float(values.max() - values.min())}


def markdown(report) -> str:
    """The table of ``report``: one row per seed, then mean, minimum and spread."""
    epochs = report['epochs']
    snapshot_epochs = list(report['runs'][0]['drift']['parameters'])
    header = (['seed', 'per step', 'layer by layer', '\\|Δ accuracy\\|',
               'max \\|Δ loss\\| over epochs']
              + [f'max \\|Δ parameter\\|, epoch {e}' for e in snapshot_epochs])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for run in report['runs']:
        drift = run['drift']
        cells = ([str(run['seed']), f"{run['per_step']['test_accuracy']:.3f}",
                  f"{run['layer_by_layer']['test_accuracy']:.3f}",
                  f"{drift['test_accuracy']:.3f}", f"{drift['training_loss_max_abs']:.2g}"]
                 + [f"{drift['parameters'][e]['max_abs']:.2g}" for e in snapshot_epochs])
        lines.append('| ' + ' | '.join(cells) + ' |')
    blanks = [''] * (len(header) - 3)
    for name in ('mean', 'min', 'spread'):
        cells = [f'**{name}**'] + [f"{report['summary'][key][name]:.3f}"
                                   for key in METHODS.values()] + blanks
        lines.append('| ' + ' | '.join(cells) + ' |')
    m = report['machine']
    lines.append('')
    lines.append(f"Test accuracy (150 test series) after {epochs} epochs of "
                 f"`{report['example']}`, per step and layer by layer from the same initial "
                 f"weights, and the largest absolute differences between the two loops "
                 f"(Δ). {m['cpu']} ({m['cores']} core{'s' * (m['cores'] != 1)}), "
                 f"{'AVX-512' if m['avx512f'] else 'no AVX-512'}"
                 f"{', XLA_FLAGS=' + m['xla_flags'] if m['xla_flags'] else ''}, "
                 f"JAX {m['jax']}, BrainPy {m['brainpy']}, {report['date'][:10]}; "
                 f"`{report['command']}`.")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=5, help='number of seeds (0, 1, ...)')
    parser.add_argument('--first-seed', type=int, default=0)
    parser.add_argument('--epochs', type=int, default=400)
    parser.add_argument('--api', choices=('classic', 'state'), default='classic',
                        help="the example's API: brainpy (classic) or brainpy.state")
    parser.add_argument('--out', default=os.path.join('out', 'gunpoint_seeds'))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    context = contextlib.nullcontext()
    if args.api == 'state':
        import brainstate
        import gunpoint_state as module
        context = brainstate.environ.context(dt=module.DT)
        name = 'gunpoint_state_seeds'
    else:
        module, name = gunpoint, 'gunpoint_seeds'
    data = gunpoint.encoded_data(argparse.Namespace(quick=False, steps=8))

    runs, start = [], time.perf_counter()
    with context:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            runs.append(one_seed(module, data, seed, args.epochs))
            r = runs[-1]
            print(f"seed {seed}: test accuracy per step {r['per_step']['test_accuracy']:.3f}, "
                  f"layer by layer {r['layer_by_layer']['test_accuracy']:.3f}; largest "
                  f"|difference| of the training loss {r['drift']['training_loss_max_abs']:.2g}, "
                  "of the parameters " + ', '.join(
                      f"{v['max_abs']:.2g} (epoch {e})"
                      for e, v in r['drift']['parameters'].items()), flush=True)

    report = {
        'example': f"examples/{'gunpoint_state' if args.api == 'state' else 'gunpoint'}.py",
        'api': args.api, 'epochs': args.epochs, 'seeds': [r['seed'] for r in runs],
        'recipe': gunpoint.RECIPE,
        'summary': {key: statistics([r[key]['test_accuracy'] for r in runs])
                    for key in METHODS.values()},
        'largest_drift': {
            'test_accuracy': max(r['drift']['test_accuracy'] for r in runs),
            'training_loss': max(r['drift']['training_loss_max_abs'] for r in runs),
            'parameters': {e: max(r['drift']['parameters'][e]['max_abs'] for r in runs)
                           for e in runs[0]['drift']['parameters']}},
        'runs': runs, 'seconds': time.perf_counter() - start,
        'machine': gunpoint.machine(),
        'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        'command': ' '.join(['python', 'benchmarks/gunpoint_seeds.py']
                            + [shlex.quote(a) for a in (argv or sys.argv[1:])]),
    }
    with open(os.path.join(args.out, f'{name}.json'), 'w') as f:
        json.dump(report, f, indent=1)
    table = markdown(report)
    with open(os.path.join(args.out, f'{name}.md'), 'w') as f:
        f.write(table)

    print()
    for key, stats in report['summary'].items():
        print(f"{key:>14}: test accuracy mean {stats['mean']:.3f}, min {stats['min']:.3f}, "
              f"spread {stats['spread']:.3f}")
    print(f"largest drift over the seeds: {report['largest_drift']}")
    print(f"{len(runs)} seeds in {report['seconds']:.0f} s; wrote "
          f"{os.path.join(args.out, name)}.json and .md")
    print(table)
    return report


if __name__ == '__main__':
    main()
