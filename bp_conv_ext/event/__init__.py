"""The event-driven path: its primitives and their rules, the registry of kernel sets,
and one module per kernel set."""
