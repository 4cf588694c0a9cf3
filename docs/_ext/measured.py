"""Every measured number a page quotes is held by a file that a run wrote.

A page's prose may quote a measurement — a speed ratio (``5.5x``), a percentage, a time, a
memory size, a rate in FLOP/s, or a number with two or more decimals (an accuracy, a
ratio of times) — only if one of the result files the page names holds it: a number in that
file which rounds to the digits quoted (for a percentage, also that number times 100). A page
names result files by their paths under ``benchmarks/results/`` (in an ``include``, a link or
the text); a folder names every file in it.

What is not prose is not read: code blocks and directives, inline code, math, link targets
and HTML comments. What is not a measurement is left alone: a number written as code or after
``=``, ``≈``, ``<``, ``>``, ``<=`` or ``>=`` (a setting such as ``p = 0.05``), a version (after
a package's name, or with two dots) and whole numbers without a unit.

In the Sphinx build each quoted number that no named file holds is a warning (an error under
``-W``), on the pages and on the README; ``python docs/_ext/measured.py FILE...`` prints them.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = 'benchmarks/results/'

#: Units as one kind each: a quoted number must be held with its kind (``'x'``: a ratio).
_KINDS = {'x': 'x', '×': 'x', 'ms': 'ms', 'µs': 'us', 'us': 'us', 's': 's', 'seconds': 's',
          'min': 'min', 'minutes': 'min', 'h': 'h', 'hours': 'h', 'GiB': 'GiB', 'MiB': 'MiB',
          'KiB': 'KiB', 'GB': 'GB', 'MB': 'MB', 'kB': 'kB', 'TFLOP/s': 'TFLOP/s',
          'GFLOP/s': 'GFLOP/s', 'MFLOP/s': 'MFLOP/s', '%': '%'}


def _alternatives(units):
    return '|'.join(map(re.escape, sorted(units, key=len, reverse=True)))


#: A unit after a number in a result file.
_UNIT_AFTER = re.compile(rf'\s?({_alternatives(_KINDS)})(?![\w/])')
_NUM = r'\d+(?:\.\d+)?'
_RANGE = r'\s*(?:–|-|to|\.\.\.)\s*'
#: In prose: a number with a unit (and the first of a range before it; a ratio's ``x`` written
#: on the number), or a number with >= 2 decimals.
_TOKEN = re.compile(
    rf'(?<![\w.\-/^])(?:(?P<a>{_NUM})(?:{_RANGE}(?P<b>{_NUM}))?'
    rf'(?:(?P<ratio>x|×)(?![\w])|\s?(?P<unit>'
    rf'{_alternatives(u for u, kind in _KINDS.items() if kind != "x")})(?![\w/]))'
    rf'|(?P<c>\d+\.\d{{2,}})(?![\d.]\d)(?:{_RANGE}(?P<d>\d+\.\d+))?)')
_SETTING = re.compile(r'(?:=|≈|<|>|≤|≥|~|±)\s*$')
_PACKAGES = ('jax', 'jaxlib', 'brainpy', 'brainstate', 'brainevent', 'braintools', 'brainunit',
             'brainpylib', 'brainpy_state', 'torch', 'pytorch', 'python', 'numba', 'taichi',
             'numpy', 'driver', 'cuda', 'cudnn', 'triton', 'nir', 'sphinx', 'aeon', 'dcls',
             'pallas', 'xla', 'version', 'versions', 'hypothesis', 'pytest', 'gcc', 'clang',
             'pyenv')
#: A version: a package's name shortly before, in the same sentence.
_VERSION = re.compile(r'\b(?:' + '|'.join(_PACKAGES) + r")(?:'s)?\b(?:(?![.;:]\s).){0,40}$",
                      re.IGNORECASE)
_FENCE = re.compile(r'^\s*(`{3,}|~{3,})')
_NUMBER_IN_FILE = re.compile(r'(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?')


def prose_lines(text):
    """``(line number, text)`` of the prose: no code blocks or directives, inline code, math,
    link targets or HTML comments."""
    fence = None
    text = re.sub(r'<!--.*?-->', lambda m: '\n' * m.group(0).count('\n'), text, flags=re.S)
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if match:
            mark = match.group(1)
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip()[len(mark):]:
                fence = None
            continue
        if fence is not None:
            continue
        line = re.sub(r'`+[^`]*`+', ' ', line)
        line = re.sub(r'\$[^$]*\$', ' ', line)
        line = re.sub(r'\]\([^)]*\)', ']', line)
        yield number, line


def quoted(text):
    """``(line number, token, [numbers], kind)`` of every measurement the prose of ``text``
    quotes; ``kind`` is its unit's (``'x'`` for ratios), ``None`` for a bare number."""
    for number, line in prose_lines(text):
        for match in _TOKEN.finditer(line):
            before, unit = line[:match.start()], match['ratio'] or match['unit']
            if _SETTING.search(before) or (unit is None and _VERSION.search(before)):
                continue
            values = [match[g] for g in 'abcd' if match[g] is not None]
            yield number, match.group(0).strip(), values, unit and _KINDS[unit]


def named_files(text, root=ROOT):
    """The result files a page names, by their paths under ``benchmarks/results/``."""
    files = set()
    for path in re.findall(re.escape(RESULTS) + r'[\w.\-/]*', text):
        full = os.path.join(root, path.rstrip('.'))
        if os.path.isdir(full):
            files.update(os.path.join(folder, name) for folder, _, names in os.walk(full)
                         for name in names)
        elif os.path.isfile(full):
            files.add(full)
    return sorted(files)


def _column_kind(header):
    """The kind of a table column's numbers, from its header: ``time (ms)`` -> ``'ms'``, a
    ratio (``a/b``, ``vs``, ``speed-up``) -> ``'x'``."""
    unit = re.search(r'\(([^)]*)\)\s*$', header)
    if unit and unit.group(1).strip() in _KINDS:
        return _KINDS[unit.group(1).strip()]
    if re.search(r'/|\bvs\b|speed|ratio|faster', header):
        return 'x'
    return None


def held_values(content):
    """``{(kind, value)}`` of the numbers in a result file: every number as a bare one
    (``None``), with its unit where one follows it, and in a markdown table with the kind of
    its column."""
    values = set()
    header, rows = None, content.splitlines()
    for i, line in enumerate(rows):
        for match in _NUMBER_IN_FILE.finditer(line):
            value = float(match.group(0))
            values.add((None, value))
            unit = _UNIT_AFTER.match(line, match.end())
            if unit:
                values.add((_KINDS[unit.group(1)], value))
        if not line.startswith('|'):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if i + 1 < len(rows) and re.match(r'^\|\s*:?-{3,}', rows[i + 1]):
            header = [_column_kind(cell) for cell in cells]
            continue
        if header is not None:
            for kind, cell in zip(header, cells):
                for match in _NUMBER_IN_FILE.finditer(cell):
                    if kind is not None:
                        values.add((kind, float(match.group(0))))
    return values


def _values(paths, _cache={}):  # noqa: B006 (a cache, shared on purpose)
    values = set()
    for path in paths:
        if path not in _cache:
            with open(path, errors='replace') as f:
                _cache[path] = held_values(f.read())
        values |= _cache[path]
    return values


def _held(value, kind, held):
    """Whether a number of ``held`` of ``kind`` rounds to ``value`` (the digits quoted);
    a percentage may be held as a fraction, a bare number as any."""
    digits = len(value.partition('.')[2])
    target, tolerance = float(value), 0.5 * 10 ** -digits + 1e-9
    for held_kind, v in held:
        if kind is None or kind == '%':
            if held_kind is None and (abs(v - target) <= tolerance or
                                      (kind == '%' and abs(100 * v - target) <= tolerance)):
                return True
        elif held_kind == kind and abs(v - target) <= tolerance:
            return True
    return False


def stale(text, root=ROOT):
    """``(line number, token, why)`` of every quoted measurement no named result file holds."""
    files = named_files(text, root)
    held = _values(files)
    for number, token, values, kind in quoted(text):
        missing = [v for v in values if not _held(v, kind, held)]
        if missing:
            what = {None: 'a number', '%': 'a number', 'x': 'a ratio'}.get(
                kind, f'a value in {kind}')
            where = (f"held as {what} by none of the {len(files)} result files the page names"
                     if files else f"the page names no result file under {RESULTS}")
            yield number, token, f"{', '.join(missing)}: {where}"


def _check_page(app, docname, source):
    from sphinx.util import logging
    logger = logging.getLogger(__name__)
    for number, token, why in stale(source[0]):
        logger.warning("quotes %r, a measured number that no run wrote: %s (write a setting as "
                       "code; quote measurements from benchmarks/results/)", token, why,
                       location=(docname, number))


def _check_readme(app):
    from sphinx.util import logging
    logger = logging.getLogger(__name__)
    path = os.path.join(ROOT, 'README.md')
    with open(path) as f:
        for number, token, why in stale(f.read()):
            logger.warning("README.md:%d quotes %r, a measured number that no run wrote: %s",
                           number, token, why)


def setup(app):
    app.connect('builder-inited', _check_readme)
    app.connect('source-read', _check_page)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}


if __name__ == '__main__':
    found = 0
    for name in sys.argv[1:]:
        with open(name) as f:
            for number, token, why in stale(f.read()):
                found += 1
                print(f"{name}:{number}: {token!r}: {why}")
    sys.exit(1 if found else 0)
