# The numba kernels need brainevent (BrainPy 2.7+), only 2.8 and 2.9 have brainstate (the
# brainpy.state layers), and the BrainPy 2.6 stack has no nir: the doctest collector must not
# import the modules whose package is missing, nor run the examples that need it.
import importlib.util

collect_ignore = [f'bp_conv_ext/{path}'
                  for package, paths in (('brainevent', ('event/kernels/numba_cpu.py',)),
                                         ('brainstate', ('state.py', 'layers/state')),
                                         ('nir', ('layers/classic/nir.py',)))
                  for path in paths
                  if importlib.util.find_spec(package) is None]
