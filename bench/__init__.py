"""Speed and throughput benchmarks (run from the repository root as `python -m bench.<name>`).

Their recorded outputs, with the command, commit and date of each: bench/results/README.md.
"""
