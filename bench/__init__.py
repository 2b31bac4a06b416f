"""Benchmarks: `python -m bench.run_all` runs them all (bench/README.md); each `python -m bench.bench_<name>` alone."""
