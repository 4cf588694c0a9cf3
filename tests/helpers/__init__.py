"""Helpers of the tests: shared cases (``cases``) and programs run in child processes."""
