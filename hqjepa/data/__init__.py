"""Data: BigEarthNet nomenclatures, the synthetic scene generator, archive readers and writers,
Parquet shards and the per-block transforms of the Ray Data stream (Ray itself is never imported).

Modules: labels, synthetic, transforms, dataset (SyntheticPairs), collate, synth_archive,
bigearthnet (archive readers), shards (Parquet schema, manifest, iter_pairs), convert, stream.
"""
