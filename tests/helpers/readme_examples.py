"""Run the Python examples of one section of the README, each in a fresh interpreter.

``python readme_examples.py README.md 'Ten lines'`` takes every ```` ```python ```` block
between the heading ``## Ten lines`` and the next heading of that level, runs each with this
interpreter in a process of its own (the current folder as its working folder) and prints,
per example, the arrays it leaves at top level with their shapes, dtypes and how many of their
entries are non-zero. It fails if the section has no Python block or an example fails.
(`make test-install` runs it from an environment holding only the installed wheel.)
"""
import re
import subprocess
import sys

#: Printed after an example, in its process: the arrays it computed.
_SUMMARY = '''
import types as _types, numpy as _np
for _name, _value in list(globals().items()):
    if (not _name.startswith('_') and not isinstance(_value, _types.ModuleType)
            and hasattr(_value, 'shape') and hasattr(_value, 'dtype')):
        _value = _np.asarray(getattr(_value, 'mantissa', _value))
        _count = _np.count_nonzero(_value)
        print(f'  {_name}: {_value.dtype}{list(_value.shape)}, {_count} non-zero')
'''


def examples(readme: str, section: str) -> list:
    """The ```` ```python ```` blocks under the level-2 heading ``section``."""
    with open(readme, encoding='utf-8') as f:
        text = f.read()
    match = re.search(rf'^## {re.escape(section)}\s*$(.*?)(?=^## |\Z)', text, re.M | re.S)
    if match is None:
        raise SystemExit(f"{readme} has no section '## {section}'")
    return re.findall(r'^```python\n(.*?)^```', match.group(1), re.M | re.S)


def main(readme: str, section: str) -> None:
    blocks = examples(readme, section)
    if not blocks:
        raise SystemExit(f"{readme}, '## {section}': no ```python block")
    for number, code in enumerate(blocks, 1):
        first = code.splitlines()[0]
        print(f"{readme} '{section}' example {number} of {len(blocks)} ({first}):", flush=True)
        run = subprocess.run([sys.executable, '-W', 'ignore', '-c', code + _SUMMARY])
        if run.returncode != 0:
            raise SystemExit(f"example {number} failed (exit {run.returncode})")


if __name__ == '__main__':
    main(*sys.argv[1:])
