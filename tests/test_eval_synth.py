"""`hqjepa synth-geobench`: the six tasks in GeoBench's format, readable by the same reader as the
geobench-written fixtures, with labels derived from the scenes."""

from __future__ import annotations

import ast
import json
import pickletools
from pathlib import Path

import h5py
import numpy as np
import pytest

from hqjepa.cli import main as cli_main
from hqjepa.eval.geobench import TASKS, GeoBenchTask
from hqjepa.eval.safe_pickle import loads_attr
from hqjepa.eval.synth_geobench import EUROSAT_OF, split_names, write_task

FIXTURES = Path(__file__).parent / "data" / "geobench"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["tasks"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth-geobench")
    assert cli_main(["synth-geobench", str(out), "--samples", "4", "--seed", "3"]) == 0
    return out


@pytest.mark.parametrize("name", list(TASKS))
def test_same_layout_as_geobench(bench, name):
    task = GeoBenchTask(bench, name)
    ref = EXPECTED[name]
    assert task.dir == bench / ref["dir"]
    assert task.band_names == ref["band_names"]
    assert type(task.label_type).__name__ == ref["label_type"] and task.n_classes == ref["n_classes"]
    assert [type(b).__name__ for b in task.band_infos] == [
        type(b).__name__ for b in GeoBenchTask(FIXTURES, name).band_infos
    ]
    assert task.specs.patch_size == (TASKS[name].size_px,) * 2  # GeoBench's real sizes
    assert task.partition() == {"train": ["id_0000", "id_0001"], "valid": ["id_0002"], "test": ["id_0003"]}
    assert set(task.band_names) <= set(task.band_stats())
    for sample in ("id_0000", "id_0003"):
        s = task.read_sample(sample)
        assert all(a.shape == (TASKS[name].size_px,) * 2 for a in s.bands.values())
        if ref["label_type"] == "SegmentationClasses":
            assert s.label.shape == (TASKS[name].size_px,) * 2
    with (
        h5py.File(task.sample_path("id_0000")) as f,
        h5py.File(GeoBenchTask(FIXTURES, name).sample_path("id_0000")) as g,
    ):
        fa, ga = loads_attr(f.attrs["pickle"]), loads_attr(g.attrs["pickle"])

        def undated(descriptors):
            return [d.split("_")[0] for d in descriptors]

        assert undated(fa["bands_order"]) == undated(ga["bands_order"])  # same bands, same order
        assert [f[d].dtype for d in fa["bands_order"]] == [g[d].dtype for d in ga["bands_order"]]
        assert set(fa[fa["bands_order"][0]]) == set(ga[ga["bands_order"][0]])  # same per-band attrs
        assert ("label" in fa) == ("label" in ga)
        # the pickles name geobench's classes, so geobench's own load_sample reads these files
        ops = {arg for _, arg, _ in pickletools.genops(ast.literal_eval(f.attrs["pickle"])) if isinstance(arg, str)}
        assert "geobench.dataset" in ops and not any("hqjepa" in o for o in ops)


def test_labels_follow_the_scene(bench):
    ben = GeoBenchTask(bench, "m-bigearthnet")
    assert ben.read_sample("id_0000").label.sum() >= 1
    crop = GeoBenchTask(bench, "m-SA-crop-type").read_sample("id_0001").label
    assert crop.min() >= 0 and crop.max() < 10 and len(np.unique(crop)) >= 2  # several crops per field map
    kiln = [GeoBenchTask(bench, "m-brick-kiln").read_sample(f"id_{i:04d}").label for i in range(4)]
    assert set(kiln) <= {0, 1}


def test_eurosat_class_is_the_dominant_cover(tmp_path):
    from hqjepa.data.synthetic import render_batch

    d = write_task(tmp_path, "m-eurosat", 6, seed=1)
    assert d == tmp_path / "classification_v1.0" / "m-eurosat"
    # redraw the same scenes: the writer's rng stream is (seed, task index)
    rng = np.random.default_rng([1, list(TASKS).index("m-eurosat")])
    pool = sorted(i for ids in EUROSAT_OF.values() for i in ids)
    batch = render_batch(rng, 6, 64, max_classes=3, classes=pool)
    task = GeoBenchTask(tmp_path, "m-eurosat")
    for i in range(6):
        shares = [batch.fractions[i, ids].sum() for _, ids in sorted(EUROSAT_OF.items())]
        assert task.read_sample(f"id_{i:04d}").label == int(np.argmax(shares))


def test_split_sizes():
    assert [len(v) for v in split_names(40).values()] == [20, 10, 10]
    assert [len(v) for v in split_names(3).values()] == [1, 1, 1]
    with pytest.raises(ValueError, match="at least 3 samples"):
        split_names(2)
