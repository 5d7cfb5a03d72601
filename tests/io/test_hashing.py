"""The one tensor hash: one tensor as recorded in every trainlock.json, several as one sequence, and the
legacy header that the frozen lock and the red team's identity.json used before (still checkable)."""

import hashlib

import pytest
import torch

from trainlock.io.hashing import state_hashes, tensor_sha256


def _v1(t):  # the single-tensor hash as io.hashing wrote it before it took several tensors
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"trainlock-tensor-v1|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _frozen_0_2(t):  # locks/frozen.py's tensor_sha256, trainlock 0.2.0
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _redteam_0_2(*tensors):  # redteam/__init__.py's _tensor_sha256, trainlock 0.2.0
    h = hashlib.sha256()
    for x in tensors:
        x = x.detach().cpu().contiguous()
        h.update(f"{x.dtype}|{tuple(x.shape)}|".encode())
        h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


TENSORS = [
    torch.arange(6, dtype=torch.float32).reshape(2, 3),
    torch.tensor(1.5, dtype=torch.bfloat16),  # 0-d
    torch.zeros(0, 4),  # empty
    torch.tensor([True, False, True]),
    torch.arange(5, dtype=torch.uint8),
    torch.arange(12, dtype=torch.int64).reshape(3, 4).t(),  # non-contiguous
    torch.randn(3, 2, dtype=torch.float64, requires_grad=True),
]


@pytest.mark.parametrize("t", TENSORS, ids=lambda t: f"{t.dtype}{tuple(t.shape)}")
def test_one_tensor_keeps_the_recorded_hash(t):
    assert tensor_sha256(t) == _v1(t)
    assert state_hashes({"w": t})["tensors"]["w"] == _v1(t)


@pytest.mark.parametrize("t", TENSORS, ids=lambda t: f"{t.dtype}{tuple(t.shape)}")
def test_legacy_is_the_frozen_locks_old_hash(t):
    assert tensor_sha256(t, legacy=True) == _frozen_0_2(t)
    assert tensor_sha256(t, legacy=True) != tensor_sha256(t)


def test_legacy_is_the_red_teams_old_identity_hash():
    x_train, y_train = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    x_test, y_test = torch.rand(2, 1, 8, 8), torch.tensor([2, 0])
    assert tensor_sha256(x_train, y_train, x_test, y_test, legacy=True) == _redteam_0_2(
        x_train, y_train, x_test, y_test
    )


def test_several_tensors_are_one_ordered_sequence():
    a, b = torch.arange(4.0), torch.arange(4.0, 8.0)
    h = tensor_sha256(a, b)
    assert h != tensor_sha256(b, a)
    assert h != tensor_sha256(torch.cat([a, b]))  # the boundary is in the hash
    assert h != tensor_sha256(a)
    assert h == tensor_sha256(a.clone(), b.clone())


def test_no_tensor_or_a_non_tensor_is_refused():
    with pytest.raises(TypeError, match="at least one tensor"):
        tensor_sha256()
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor, got list"):
        tensor_sha256(torch.zeros(1), [1.0])
