"""Print the requirements that ``pip install -e '.[EXTRAS]'`` installs, from setup.cfg, one per
line (environment markers kept): ``python constraints/requirements.py test,examples``.

`make` installs a stack's dependencies from this list and then the package itself without
its dependencies: the dependencies of several stacks can install side by side, and only the
step that writes the package's metadata into the source tree runs one at a time.
"""
import configparser
import pathlib
import sys


def requirements(extras):
    setup = configparser.ConfigParser()
    setup.read(pathlib.Path(__file__).resolve().parent.parent / 'setup.cfg')
    known = setup['options.extras_require']
    unknown = [name for name in extras if name not in known]
    if unknown:
        raise SystemExit(f"extras {unknown} are not in setup.cfg's [options.extras_require] "
                         f"({', '.join(known)})")
    values = [setup['options']['install_requires']] + [known[name] for name in extras]
    return [line.strip() for value in values for line in value.splitlines() if line.strip()]


if __name__ == '__main__':
    print('\n'.join(requirements([e for e in ''.join(sys.argv[1:]).split(',') if e])))
