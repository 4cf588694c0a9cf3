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


#: The floors of the page's table: what each package may import of the package.
FLOORS = {'core': set(), 'event': {'core', '_jax_private'}, 'interop': {'core'},
          'ops': {'event', 'core', '_jax_private'}, 'layers': {'ops', 'core', 'interop'},
          '_jax_private': set()}


def _imports(path, package):
    """The modules ``path`` (a module of ``package``, dotted) imports when it runs: the
    package's own by their top folder below ``bp_conv_ext``, the others by their top-level
    name."""
    import ast
    with open(path) as f:
        tree = ast.parse(f.read())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, 'id', None) == 'TYPE_CHECKING'
                   for n in ast.walk(block)}    # annotations only: not imported at run time
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                target = base[1:] + (node.module.split('.') if node.module else [])
                found.add('bp_conv_ext.' + (target[0] if target else
                                            node.names[0].name))
            else:
                found.add(node.module.split('.')[0])
    return found


@pytest.mark.parametrize('floor', sorted(FLOORS))
def test_each_package_imports_only_the_floors_below_it(floor):
    import sys
    for folder, _, files in os.walk(os.path.join(PACKAGE, floor)):
        for name in files if os.path.isdir(os.path.join(PACKAGE, floor)) else []:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                package = 'bp_conv_ext.' + os.path.relpath(folder, PACKAGE).replace(os.sep, '.')
                own = {m.split('.', 1)[1] for m in _imports(path, package)
                       if m.startswith('bp_conv_ext.')} - {floor}
                assert own <= FLOORS[floor], (path, own - FLOORS[floor])
                if floor == 'core':     # pure functions: JAX and NumPy, no BrainPy
                    libraries = {m for m in _imports(path, package)
                                 if not m.startswith('bp_conv_ext')}
                    others = libraries - set(sys.stdlib_module_names) - {'jax', 'numpy'}
                    assert not others, (path, others)
