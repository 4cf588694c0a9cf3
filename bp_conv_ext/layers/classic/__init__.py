"""The classic BrainPy API's layers (``brainpy.dnn.Layer``), sequential runner and trainer."""
