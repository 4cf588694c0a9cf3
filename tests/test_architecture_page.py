"""docs/architecture.md names modules, functions and files of the package: each one it cites
exists (a page that points a new maintainer at a name that is gone is worse than none)."""
import importlib
import os
import pkgutil
import re

import pytest

import bp_conv_ext

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
PACKAGE = os.path.dirname(bp_conv_ext.__file__)
PAGE = os.path.join(ROOT, 'docs', 'architecture.md')

#: The package's modules, by dotted name below ``bp_conv_ext`` (``'ops.conv'``).
MODULES = sorted(info.name.split('.', 1)[1] for info in
                 pkgutil.walk_packages(bp_conv_ext.__path__, 'bp_conv_ext.')
                 if not info.name.startswith('bp_conv_ext.state'))


def _cited():
    """The page's code spans that cite the package: dotted names whose first part is one of
    its modules (``ops.conv.plan``, ``dense.choose``, ``registry.running(platform)``) and
    paths of its files and folders (``core/dense.py``, ``layers/classic/``)."""
    with open(PAGE) as f:
        spans = set(re.findall(r'`([^`\s]+)`', f.read()))
    firsts = {m.split('.')[0] for m in MODULES} | {m.split('.')[-1] for m in MODULES}
    names = sorted(s for s in spans if '.' in s and '/' not in s
                   and s.split('.')[0] in firsts and not s.endswith('.py'))
    paths = sorted(s for s in spans if '/' in s and not s.startswith(('tests/', 'docs/')))
    return names, paths


NAMES, PATHS = _cited()


def _resolve(name):
    """The objects that ``name`` cites: the longest leading part that is one of the package's
    modules (by its dotted name, or by its last part: in every module of that name, as the
    page cites what each API's module of one name provides), then the attributes after it."""
    parts = re.sub(r'\(.*\)$', '', name).split('.')
    for cut in range(len(parts), 0, -1):
        head = '.'.join(parts[:cut])
        found = [m for m in MODULES if m == head] or (
            [m for m in MODULES if m.split('.')[-1] == head] if cut == 1 else [])
        if found:
            objects = []
            for module in found:
                obj = importlib.import_module(f'bp_conv_ext.{module}')
                for attribute in parts[cut:]:
                    obj = getattr(obj, attribute)
                objects.append(obj)
            return objects
    raise LookupError(f"`{name}` names no module of the package")


def test_the_page_cites_names_and_paths():
    # The check itself: a page whose citations the patterns miss would pass untested.
    assert len(NAMES) >= 10 and len(PATHS) >= 10, (NAMES, PATHS)


@pytest.mark.parametrize('name', NAMES)
def test_each_name_the_page_cites_exists(name):
    _resolve(name)


@pytest.mark.parametrize('path', PATHS)
def test_each_path_the_page_cites_exists(path):
    relative = path[len('bp_conv_ext/'):] if path.startswith('bp_conv_ext/') else path
    assert os.path.exists(os.path.join(PACKAGE, relative)), path
