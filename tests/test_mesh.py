import numpy as np
import pytest
import torch
import trimesh
from headbook.geometry.mesh import *


@pytest.fixture
def sphere():
    s = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    return torch.tensor(s.vertices, dtype=torch.float64)[None], torch.tensor(s.faces)


def test_normals_match_trimesh(sphere):
    v, f = sphere
    m = trimesh.Trimesh(v[0].numpy(), f.numpy(), process=False)
    assert np.allclose(face_normals(v, f)[0].numpy(), m.face_normals, atol=1e-9)
    assert np.allclose(face_areas(v, f)[0].numpy(), m.area_faces, atol=1e-12)
    # area-weighted vertex normals against a numpy reference, and radial on a sphere
    ref = np.zeros_like(m.vertices)
    for k in range(3): np.add.at(ref, m.faces[:, k], np.cross(m.triangles[:, 1] - m.triangles[:, 0], m.triangles[:, 2] - m.triangles[:, 0]))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    vn = vertex_normals(v, f)[0].numpy()
    assert np.allclose(vn, ref, atol=1e-12)
    assert np.allclose(vn, m.vertices / np.linalg.norm(m.vertices, axis=1, keepdims=True), atol=2e-2)


def test_face_frames_follow_rigid_motion(sphere):
    v, f = sphere
    from headbook.geometry.rotations import axis_angle_to_matrix
    R = axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64))
    F1 = face_frames(v, f); F2 = face_frames(v @ R.T + 0.5, f)
    assert torch.allclose(F2, R @ F1, atol=1e-9)


def test_sampling_is_area_uniform(sphere):
    v, f = sphere
    g = torch.Generator().manual_seed(0)
    p, fi, bc = sample_points(v, f, 20000, generator=g)
    assert torch.allclose(p.norm(dim=-1), torch.full((1, 20000), 0.1, dtype=v.dtype), atol=2e-3)
    # the hemispheres receive equal shares
    assert abs((p[0, :, 0] > 0).double().mean().item() - 0.5) < 0.02
    assert torch.allclose(barycentric_interpolate(v, f, fi, bc), p)


def test_io_roundtrip_keeps_order_and_colours(tmp_path, sphere):
    v, f = sphere
    c = torch.rand(v.shape[1], 3)
    for ext in ("obj", "ply"):
        p = save_mesh(tmp_path / f"m.{ext}", v[0], f, colors=c)
        v2, f2 = load_mesh(p)
        assert np.allclose(v2, v[0].numpy(), atol=1e-6) and (f2 == f.numpy()).all()
    with pytest.raises(FileNotFoundError, match="mesh file not found"):
        load_mesh(tmp_path / "missing.obj")


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"verts must have shape \[B, V, 3\]"):
        vertex_normals(torch.zeros(1, 4, 2), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"faces must have shape \[F, 3\]"):
        face_normals(torch.zeros(1, 4, 3), torch.zeros(2, 4, dtype=torch.long))
