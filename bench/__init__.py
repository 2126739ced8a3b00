"""Benchmarks of the hot paths; each script prints its figures and its ratio to a physical
limit measured in the same run. See docs/performance.md."""
