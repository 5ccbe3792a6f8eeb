"""Runs that cannot be corrupted on shared storage: identity (`run.json`), locks, checkpoint checksums.

- `storage`: small file operations on a local path, NFS or an object-store URI (pyarrow filesystems).
- `identity`: a run directory's resolved settings and their fingerprint; a rerun with other settings
  is refused with the keys that differ.
- `lock`: one live process per run name or output directory (a lock file, or a lease object on S3).
- `integrity`: checkpoint checksums written last, verification, and the newest checkpoint that verifies.

No Ray here: the drivers in `ray_jobs/` use these.
"""
