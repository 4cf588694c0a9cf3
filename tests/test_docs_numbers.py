"""The pages quote measured numbers only from result files (docs/_ext/measured.py)."""
import glob
import os
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, os.path.join(ROOT, 'docs', '_ext'))
import measured  # noqa: E402

PAGES = ['README.md'] + sorted(os.path.relpath(p, ROOT)
                               for p in glob.glob(os.path.join(ROOT, 'docs', '*.md')))


@pytest.mark.parametrize('page', PAGES)
def test_every_measured_number_a_page_quotes_is_in_a_result_file_it_names(page):
    with open(os.path.join(ROOT, page)) as f:
        assert list(measured.stale(f.read())) == []


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / 'benchmarks' / 'results' / 'cpu-2000-01-01'
    folder.mkdir(parents=True)
    (folder / 'suite.md').write_text("| shape | ours (ms) | ours/lax |\n| --- | ---: | ---: |\n"
                                     "| B32 | 0.5861 | 5.48 |\n"
                                     "accuracy 0.9600, 12.5 % of the time\n")
    return tmp_path


def _stale(text, root):
    return [(token, why) for _, token, why in measured.stale(text, root=str(root))]


def test_a_number_the_named_files_hold_passes_and_a_stale_one_is_named(results):
    cites = "From `benchmarks/results/cpu-2000-01-01/suite.md`: "
    assert _stale(cites + "5.5x faster, 0.586 ms, accuracy 0.96 (96 %), 12.5 %.", results) == []
    found = _stale(cites + "now 5.8x faster, and 0.97 accurate.", results)
    assert [token for token, _ in found] == ['5.8x', '0.97']
    assert found[0][1] == '5.8: held as a ratio by none of the 1 result files the page names'
    # A number is held with its kind: a time is not a ratio, a ratio column holds ratios.
    assert [token for token, _ in _stale(cites + "0.59x, 5.48 ms.", results)] == ['0.59x',
                                                                                 '5.48 ms']
    # A folder names every file in it.
    assert _stale("See `benchmarks/results/cpu-2000-01-01/`: 5.5x.", results) == []


def test_a_page_that_names_no_result_file_may_quote_no_measurement(results):
    found = _stale("It is 6–7x faster and takes 2.4 s.\n", results)
    assert [token for token, _ in found] == ['6–7x', '2.4 s']
    assert 'names no result file' in found[0][1]


def test_settings_versions_code_and_math_are_not_measurements(results):
    text = ("At p = 0.05 and `rate=0.01`, dt <= 0.1 ms, on JAX 0.12 or Python 3.12 and 3.13,\n"
            "with $\\sigma = 0.25$ and 100 steps.\n"
            "```python\nprint(0.987)  # 5.5x\n```\n"
            "<!-- 0.123 -->\n")
    assert _stale(text, results) == []
