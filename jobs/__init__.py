"""Job entry points, run by the worker as ``python -m jobs.<kind> --job-id N``."""
