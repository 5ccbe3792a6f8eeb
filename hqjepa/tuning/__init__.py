"""Hyperparameter search pieces that need no Ray: the YAML search space (`space`), one trial's
budget and GeoBench metric (`trial`), and the search's tables, plots and best config (`report`).
`ray_jobs/tune.py` wires them to Ray Tune and Optuna."""
