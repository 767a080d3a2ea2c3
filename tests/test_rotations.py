import math
import pytest
import torch
from headbook.geometry.rotations import *


def rand_aa(n, lo=0.0, hi=math.pi, gen=None, dtype=torch.float64):
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=dtype), dim=-1)
    ang = lo + (hi - lo) * torch.rand(n, 1, generator=gen, dtype=dtype)
    return axis * ang


@pytest.mark.parametrize("lo,hi", [(0, 1e-7), (1e-7, 1e-3), (1e-3, 3.0), (math.pi - 1e-3, math.pi - 1e-7)])
def test_axis_angle_roundtrip(lo, hi):
    g = torch.Generator().manual_seed(0)
    aa = rand_aa(200, lo, hi, g)
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    assert torch.allclose(back, aa, atol=1e-9 if hi < 3 else 1e-6)


def test_matrix_is_rotation_and_matches_scipy():
    from scipy.spatial.transform import Rotation
    aa = rand_aa(100, 0, math.pi, torch.Generator().manual_seed(1))
    R = axis_angle_to_matrix(aa)
    ref = torch.tensor(Rotation.from_rotvec(aa.numpy()).as_matrix())
    assert torch.allclose(R, ref, atol=1e-12)
    q = matrix_to_quaternion(R)
    qs = torch.tensor(Rotation.from_rotvec(aa.numpy()).as_quat(scalar_first=True))
    qs = torch.where(qs[:, :1] < 0, -qs, qs)
    assert torch.allclose(q, qs, atol=1e-9)


def test_exactly_pi_is_a_valid_inverse():
    for axis in torch.eye(3, dtype=torch.float64):
        R = axis_angle_to_matrix(axis * math.pi)
        assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, atol=1e-9)


def test_6d_and_quaternion_roundtrips():
    R = axis_angle_to_matrix(rand_aa(50, 0, math.pi, torch.Generator().manual_seed(2)))
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R, atol=1e-12)
    assert torch.allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)
    aa = rand_aa(50, 0, 3.0, torch.Generator().manual_seed(3))
    assert torch.allclose(quaternion_to_axis_angle(axis_angle_to_quaternion(aa)), aa, atol=1e-9)


def test_gradcheck_all():
    g = torch.Generator().manual_seed(4)
    for fn, x in [(axis_angle_to_matrix, rand_aa(3, 0, 3, g)), (axis_angle_to_matrix, torch.zeros(2, 3, dtype=torch.double)),
                  (matrix_to_axis_angle, axis_angle_to_matrix(rand_aa(3, 0.1, 3, g))),
                  (rotation_6d_to_matrix, torch.randn(3, 6, dtype=torch.double, generator=g)),
                  (quaternion_to_matrix, torch.randn(3, 4, dtype=torch.double, generator=g)),
                  (axis_angle_to_quaternion, torch.zeros(2, 3, dtype=torch.double))]:
        x = x.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(fn, (x,))


def test_gradient_finite_at_zero():
    aa = torch.zeros(1, 3, requires_grad=True)
    axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()


@pytest.mark.parametrize("fn,bad", [(axis_angle_to_matrix, torch.zeros(2, 4)), (matrix_to_axis_angle, torch.zeros(3, 3, 2)),
                                    (rotation_6d_to_matrix, torch.zeros(5)), (quaternion_to_matrix, torch.zeros(2, 3))])
def test_bad_shapes_name_the_argument(fn, bad):
    with pytest.raises(ValueError, match=r"must have shape \[\.\.\."):
        fn(bad)
    with pytest.raises(TypeError):
        fn(bad.numpy())
