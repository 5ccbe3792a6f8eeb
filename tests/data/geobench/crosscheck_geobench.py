"""Cross-check: geobench's OWN reader and integrity check on files this project writes.

Run in the isolated geobench venv (see make_fixtures.py) on the output of `hqjepa synth-geobench`:

    .venv/bin/python -m hqjepa synth-geobench /tmp/sg --samples 8
    GEO_BENCH_DIR=/tmp/gb-home /tmp/gbvenv/bin/python tests/data/geobench/crosscheck_geobench.py /tmp/sg

For every task it runs geobench.dataset.check_dataset_integrity (band infos equal to the task specs,
shapes equal to patch_size, labels valid for the label type, partitions consistent), loads a sample
with geobench.dataset.load_sample and packs it with Sample.pack_to_3d, and prints a JSON summary.
"""
import os, sys, json, warnings
os.environ.setdefault("GEO_BENCH_DIR", "/tmp/gb-home"); os.environ["TQDM_DISABLE"] = "1"
warnings.filterwarnings("ignore")
from pathlib import Path
import numpy as np
import geobench as gb
from geobench.dataset import GeobenchDataset, check_dataset_integrity, load_sample
from geobench.task import load_task_specs
root = Path(sys.argv[1])
out = {}
for bench in ("classification_v1.0", "segmentation_v1.0"):
    for task in gb.task_iterator(benchmark_dir=root / bench):
        d = root / bench / task.dataset_name
        ds = GeobenchDataset(d, partition_name="default")
        check_dataset_integrity(ds, samples=None)   # geobench's own checks: bands, shapes, label validity
        s = load_sample(d / "id_0000.hdf5", format="hdf5")
        arr, names = s.pack_to_3d(band_names=[b.name for b in task.bands_info])
        means = ds.band_stats
        out[task.dataset_name] = {"label_type": type(task.label_type).__name__, "n_bands": len(names),
                                  "shape": list(arr.shape), "first_bands": names[:3],
                                  "label": (list(s.label.data.shape) if isinstance(s.label, gb.Band) else
                                            (np.asarray(s.label).tolist() if isinstance(s.label, np.ndarray) else s.label)),
                                  "train": len(ds.load_partition("default").partition_dict["train"]),
                                  "stats_bands": len(means)}
print(json.dumps(out, indent=1))
