# The numba kernels need brainevent (BrainPy 2.7+), and only 2.8 and 2.9 have brainstate (the
# brainpy.state layers): the doctest collector must not import the modules whose package is
# missing.
import importlib.util

collect_ignore = [f'bp_conv_ext/{path}'
                  for package, paths in (('brainevent', ('event/kernels/numba_cpu.py',)),
                                         ('brainstate', ('state.py', 'layers/state')))
                  for path in paths
                  if importlib.util.find_spec(package) is None]
