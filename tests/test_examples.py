"""The examples run end to end in their --quick form and write what they promise."""
import datetime
import importlib.util
import json
import os

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, 'examples')


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spike_raster_quick(tmp_path):
    pytest.importorskip('matplotlib')
    result = _load('spike_raster').main(['--quick', '--out', str(tmp_path)])
    assert os.path.getsize(result['figure']) > 10_000
    assert set(result['rates_hz']) == {'input', 'LIF 1', 'LIF 2'}
    assert all(rate > 0 for rate in result['rates_hz'].values())


@pytest.mark.parametrize('name', ['gunpoint', 'gunpoint_state'])
def test_gunpoint_quick(tmp_path, name):
    if name == 'gunpoint_state':
        pytest.importorskip('brainstate')      # brainpy.state: BrainPy 2.8 and 2.9
    pytest.importorskip('matplotlib')
    pytest.importorskip('aeon')
    result = _load(name).main(['--quick', '--out', str(tmp_path)])
    assert os.path.getsize(result['figure']) > 10_000
    assert os.path.getsize(result['checkpoint']) > 1_000
    assert result['reloaded_accuracy'] == result['test_accuracy']
    assert set(result['seconds']) == {'per step', 'layer by layer'}
    assert all(0.0 <= acc <= 1.0 for acc in result['test_accuracy_by_method'].values())
    with open(result['report']) as f:
        report = json.load(f)
    assert os.path.basename(result['report']) == f'{name}.json'
    assert report['epochs'] == 2 and report['seed'] == 0
    for method, key in (('per step', 'per_step'), ('layer by layer', 'layer_by_layer')):
        assert report[key]['test_accuracy'] == result['test_accuracy_by_method'][method]
    assert report['difference']['test_accuracy'] == abs(
        report['per_step']['test_accuracy'] - report['layer_by_layer']['test_accuracy'])
    assert report['recipe']['clip_global_norm'] > 0
    assert isinstance(report['machine']['avx512f'], bool) and report['machine']['cpu']
    datetime.datetime.fromisoformat(report['date'])


def test_nir_export_quick(tmp_path):
    pytest.importorskip('nir')
    pytest.importorskip('aeon')
    result = _load('nir_export').main(['--quick', '--out', str(tmp_path)])
    assert list(result['nodes'].values()) == [
        'Input', 'Conv1d', 'LIF', 'Conv1d', 'Conv1d', 'LIF', 'Conv1d', 'Flatten', 'Affine',
        'Output']
    assert os.path.getsize(result['graph']) > 10_000
    accuracies, differences = result['test_accuracy'], result['largest_output_difference']
    assert differences['reloaded (classic)'] <= 1e-6
    assert accuracies['reloaded (classic)'] == accuracies['here']
    # SpikingJelly where installed (the BrainPy 2.8 stack): the same spikes, so the outputs
    # differ by float32 rounding only (tests/interop/test_nir_peers.py says why).
    for name in ('reloaded (brainpy.state)', 'SpikingJelly'):
        if name in accuracies:
            assert differences[name] <= 1e-5 and accuracies[name] == accuracies['here']
    with open(result['report']) as f:
        assert json.load(f)['test_accuracy'] == accuracies


def test_delays_quick(tmp_path):
    pytest.importorskip('matplotlib')
    pytest.importorskip('aeon')
    figure = str(tmp_path / 'delays.png')
    result = _load('delays').main(['--quick', '--figure', figure, '--out', str(tmp_path)])
    assert os.path.getsize(result['figure']) > 10_000
    for task in ('synthetic', 'basic_motions'):
        assert set(result[task]) == {'with delays', 'no delays'}
        for run in result[task].values():
            assert 0.0 <= run['test'] <= 1.0 and run['wall'] > 0
        assert {'test_gauss', 'test_rounded'} <= set(result[task]['with delays'])
        assert result['settings']['tasks'][task]['fine_tune'] >= 1
    with open(tmp_path / 'delays.json') as f:
        report = json.load(f)
    assert report['command'].startswith('python examples/delays.py --quick')
    assert set(report['machine']) >= {'cpu', 'cores', 'jax', 'brainpy'}
    table = (tmp_path / 'delays.md').read_text()
    rows = [line for line in table.splitlines() if line.startswith('| ')]
    assert len(rows) == 4 and report['command'] in table      # header, rule, the two tasks
