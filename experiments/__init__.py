"""Learning studies: does pretraining help, and why (run from the repository root as
`python -m experiments.<name>`).

One folder per study holds its README (question, commands, commits, settings, results, verdict)
and its data; experiments/README.md is the index.
"""
