"""What the classic layers share: BrainPy's modes, the shape of a step in each, names."""
import brainpy.math as bm

# The shape one time step has in each mode; a sequence adds a leading T axis.
STEP_SHAPES = {
    'NonBatchingMode': '[H, C]',
    'BatchingMode': '[B, H, C]',
    'TrainingMode': '[B, H, C]',
}

# The shape of one time step's input to a delay layer in each mode, as error messages name it.
DELAY_STEP_SHAPES = {
    'NonBatchingMode': '[C]',
    'BatchingMode': '[B, C]',
    'TrainingMode': '[B, C]',
}


def check_name(name):
    if name is not None and (not isinstance(name, str) or not name.isidentifier()):
        raise (ValueError if isinstance(name, str) else TypeError)(
            f"`name` (={name!r}) must be None or a str that is a Python identifier.")
    return name


def check_mode(mode) -> bm.Mode:
    if mode is None:
        mode = bm.get_mode()
    if not isinstance(mode, bm.Mode):
        raise TypeError(f"`mode` (={mode!r}) must be a brainpy.math.Mode instance such as "
                        f"bm.NonBatchingMode(), bm.BatchingMode() or bm.TrainingMode().")
    if not isinstance(mode, (bm.NonBatchingMode, bm.BatchingMode)):
        raise ValueError(f"`mode` (={mode!r}) is not supported; expected NonBatchingMode, "
                         f"BatchingMode or TrainingMode.")
    return mode
