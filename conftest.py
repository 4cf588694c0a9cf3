# Each BrainPy generation has the custom-kernel runtime of one event-driven kernel module;
# the doctest collector must not import the other one.
import importlib.util

collect_ignore = [f'bp_conv_ext/{module}.py'
                  for package, module in (('brainevent', '_event_numba'),
                                          ('brainpylib', '_event_taichi'))
                  if importlib.util.find_spec(package) is None]
