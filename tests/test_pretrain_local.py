"""hqjepa.pretrain_local's device choice: a CUDA device that is not there is a clear error, and on
CUDA the same seed gives the same run as on the CPU (the bench pools pairs from both)."""

import argparse

import pytest
import torch

from hqjepa import pretrain_local


def test_device_names_are_checked():
    assert pretrain_local.resolve_device("cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert pretrain_local.resolve_device("auto").type == want
    with pytest.raises(SystemExit, match="not a device"):
        pretrain_local.resolve_device("gpu0")
    with pytest.raises(SystemExit, match="trains on cpu or cuda"):
        pretrain_local.resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_fails_before_any_work(tmp_path):
    parser = argparse.ArgumentParser()
    pretrain_local.configure_parser(parser)
    args = parser.parse_args(["--out", str(tmp_path / "run"), "--device", "cuda", "--quiet"])
    with pytest.raises(SystemExit, match="no CUDA device is visible"):
        pretrain_local.main(args)
    assert not (tmp_path / "run").exists()  # nothing written


def _run(tmp_path, device: str) -> dict:
    parser = argparse.ArgumentParser()
    pretrain_local.configure_parser(parser)
    out = tmp_path / device
    args = parser.parse_args(
        [
            "--out",
            str(out),
            "--device",
            device,
            "--quiet",
            "--max-steps",
            "2",
            "--set",
            "data.synthetic_pairs=32",
            "--set",
            "train.steps_per_epoch=2",
            "--set",
            "optim.precision=fp32",
            "--set",
            "optim.seed=3",
            "--set",
            "train.export_encoder=student",
        ]
    )
    assert pretrain_local.main(args) == 0
    from hqjepa.runlog import read_metrics

    return {
        "encoder": torch.load(out / "export.pt", map_location="cpu", weights_only=True)["encoder"],
        "losses": {k: v for k, v in read_metrics(out / "metrics.csv").items() if k.startswith("loss_")},
    }


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_matches_the_cpu_run_of_the_same_seed(tmp_path):
    """Same weights at step 0, scenes, order and masks: the two fp32 steps' losses and the student
    encoder after them differ only by floating-point reassociation."""
    cpu, cuda = _run(tmp_path, "cpu"), _run(tmp_path, "cuda")
    assert cpu["losses"].keys() == cuda["losses"].keys() and "loss_pred" in cpu["losses"]
    for k, values in cpu["losses"].items():
        torch.testing.assert_close(torch.tensor(cuda["losses"][k]), torch.tensor(values), rtol=1e-3, atol=1e-5, msg=k)
    assert cpu["encoder"].keys() == cuda["encoder"].keys()
    for k in cpu["encoder"]:
        torch.testing.assert_close(cuda["encoder"][k].float(), cpu["encoder"][k].float(), rtol=1e-3, atol=1e-5, msg=k)
