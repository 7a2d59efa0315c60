"""Benchmarks of Sextant against the tools analysts would use instead (`make bench`)."""
