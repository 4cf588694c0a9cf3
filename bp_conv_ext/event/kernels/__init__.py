"""The event-driven kernels, one module per kernel set (see :mod:`..registry`)."""
