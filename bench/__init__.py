"""Benchmarks for the attention explorer (run `python bench/benchmark.py --help`)."""
