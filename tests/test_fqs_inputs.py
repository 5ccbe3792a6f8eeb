"""Bad inputs to the FQS fidelity and head raise a clear error naming the argument."""

from __future__ import annotations

import pytest
import torch

from hqjepa.quantum.fidelity import swap_test_fidelity
from hqjepa.quantum.head import FQSHead


def _good(batch: int = 4, l_enc: int = 2, l_pred: int = 1, dtype=torch.float32):
    return {
        "student": torch.zeros(batch, l_enc, 5, 3, dtype=dtype),
        "teacher": torch.zeros(batch, l_enc, 5, 3, dtype=dtype),
        "predictor": torch.zeros(batch, l_pred, 5, 3, dtype=dtype),
    }


def test_good_inputs_pass():
    assert swap_test_fidelity(**_good()).shape == (4,)
    assert swap_test_fidelity(**_good(l_pred=0)).shape == (4,)


@pytest.mark.parametrize(
    "arg,value,match",
    [
        ("student", torch.zeros(4, 5, 3), r"student: expected angles of shape \[B, L, 5, 3\]"),
        ("teacher", torch.zeros(4, 2, 5, 2), r"teacher: expected angles of shape .* got \[4, 2, 5, 2\]"),
        ("predictor", torch.zeros(4, 1, 4, 3), r"predictor: expected angles of shape .*\[4, 1, 4, 3\]"),
        ("student", torch.zeros(1, 4, 2, 5, 3), r"student: expected angles of shape"),
        ("teacher", torch.zeros(3, 2, 5, 3), r"teacher: batch size 3 differs from student's 4"),
        ("predictor", torch.zeros(5, 1, 5, 3), r"predictor: batch size 5 differs"),
        ("teacher", torch.zeros(4, 3, 5, 3), r"teacher: 3 encoding layers, student has 2"),
        ("teacher", torch.zeros(4, 2, 5, 3, dtype=torch.float64), r"teacher: dtype torch.float64 differs"),
        ("predictor", torch.zeros(4, 1, 5, 3, dtype=torch.float16), r"predictor: expected float32 or float64"),
        ("student", torch.zeros(4, 2, 5, 3, dtype=torch.int64), r"student: expected float32 or float64"),
        ("teacher", torch.zeros(4, 2, 5, 3, device="meta"), r"teacher: device meta differs"),
    ],
)
def test_bad_shape_dtype_device(arg, value, match):
    kwargs = _good()
    kwargs[arg] = value
    with pytest.raises(ValueError, match=match):
        swap_test_fidelity(**kwargs)


@pytest.mark.parametrize("arg", ["student", "teacher", "predictor"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_angles(arg, bad):
    kwargs = _good()
    kwargs[arg][1, 0, 3, 2] = bad
    with pytest.raises(ValueError, match=rf"{arg}: angles contain NaN or infinity"):
        swap_test_fidelity(**kwargs)


def test_no_encoding_layer():
    with pytest.raises(ValueError, match=r"student: needs at least one encoding layer"):
        swap_test_fidelity(**_good(l_enc=0))


def test_not_a_tensor_and_unknown_backend():
    kwargs = _good()
    kwargs["teacher"] = [[0.0]]
    with pytest.raises(TypeError, match=r"teacher: expected a torch.Tensor"):
        swap_test_fidelity(**kwargs)
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        swap_test_fidelity(**_good(), backend="qiskit")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"embed_dim": 0}, r"embed_dim"),
        ({"embed_dim": 8, "enc_layers": 0}, r"enc_layers"),
        ({"embed_dim": 8, "pred_layers": -1}, r"pred_layers"),
        ({"embed_dim": 8, "backend": "cirq"}, r"backend"),
    ],
)
def test_head_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FQSHead(**kwargs)


@pytest.mark.parametrize(
    "ctx,tgt,query,match",
    [
        ((4, 9), (4, 3, 8), (4, 3, 8), r"context_summary: expected \[B, 8\], got \[4, 9\]"),
        ((4, 8), (4, 8), (4, 3, 8), r"target_summary: expected \[4, K, 8\], got \[4, 8\]"),
        ((4, 8), (5, 3, 8), (4, 3, 8), r"target_summary: expected \[4, K, 8\]"),
        ((4, 8), (4, 3, 8), (4, 2, 8), r"mask_query: expected \[4, 3, 8\], got \[4, 2, 8\]"),
    ],
)
def test_head_bad_shapes(ctx, tgt, query, match):
    head = FQSHead(8)
    with pytest.raises(ValueError, match=match):
        head(torch.zeros(ctx), torch.zeros(tgt), torch.zeros(query))
