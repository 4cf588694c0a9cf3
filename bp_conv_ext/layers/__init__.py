"""The layers: what both BrainPy APIs share (``base``), then one package per API
(``classic``: ``brainpy.dnn``; ``state``: ``brainpy.state``)."""
