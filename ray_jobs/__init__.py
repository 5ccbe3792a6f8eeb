"""Thin Ray drivers over the `hqjepa` library: convert, pretrain, evaluate, tune.

Each module reads alike: worker code first, then the driver, `main`, `parse_args`. All of them
start or join Ray through `ray_jobs.runtime.start_ray`.
"""
