"""GeoBench evaluation: read GeoBench's on-disk format, map bands, probe and fine-tune an encoder.

Modules, one job each:
- `safe_pickle`: restricted unpickler for GeoBench's pickled metadata, with local stand-ins for the
  geobench classes (the `geobench` package cannot be a dependency).
- `geobench`: the six tasks, the reader (HDF5 samples, task specs, partitions, band stats).
- `band_map`: GeoBench band names -> the encoder's S2 bands, the fill rule for missing bands.
- `dataset`: a torch Dataset of normalised, resized samples in the encoder's band order.
- `metrics`: GeoBench's metrics (torchmetrics Accuracy / F1Score / JaccardIndex as GeoBench sets them).
- `config`: configs/eval.yaml (seeds, epochs, learning rates per protocol, per-task overrides).
- `heads`, `probe`: linear probing and fine-tuning protocols.
- `runner`: one (task, protocol, seed, encoder) evaluation, errors turned into a result record.
- `report`: results.json, the Table-1-shaped markdown table, the bar chart.
- `geobench_writer`: writes GeoBench's format (HDF5 samples, task specs, partitions, band stats).
- `synth_geobench`: `hqjepa synth-geobench OUT` writes the six tasks in GeoBench's format.
"""
