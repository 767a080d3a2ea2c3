"implicit.extract: marching cubes accuracy, coarse-to-fine equals the full grid, components, files."
import math
import numpy as np, pytest, torch
from headbook.implicit.extract import (sdf_grid, sdf_grid_coarse_to_fine, marching_cubes, largest_component,
                                       extract_mesh, grid_points)
from headbook.geometry.mesh import sample_points
from headbook.eval.distance import point_to_mesh_distance


def test_marching_cubes_sphere_chamfer_below_half_a_voxel():
    r, R = 0.6, 64
    sphere = lambda p: p.norm(dim=-1) - r
    v, f = marching_cubes(sdf_grid(sphere, [-1] * 3, [1] * 3, R), [-1] * 3, [1] * 3)
    voxel = 2 / (R - 1)
    g = torch.Generator().manual_seed(0)
    pm = sample_points(v[None], f, 20000, generator=g)[0][0]
    d_mesh_to_sphere = (pm.norm(dim=-1) - r).abs().mean()
    u = torch.randn(20000, 3, generator=g); ps = r * u / u.norm(dim=-1, keepdim=True)
    d_sphere_to_mesh = point_to_mesh_distance(ps.double().numpy(), v.double().numpy(), f.numpy()).distances.mean()
    chamfer = 0.5 * (float(d_mesh_to_sphere) + float(d_sphere_to_mesh))
    assert chamfer < 0.5 * voxel, (chamfer, voxel)
    assert chamfer < 0.05 * voxel                                                   # measured: ~0.01 voxel


@pytest.mark.parametrize("R", [33, 64, 97])
def test_coarse_to_fine_gives_the_same_mesh(R):
    from headbook.implicit.fields import SDFNetwork
    net = SDFNetwork(width=64, n_layers=4, skips=(2,), n_freqs=2, radius=0.5, weight_norm=False)
    full = sdf_grid(net, [-1] * 3, [1] * 3, R)
    c2f = sdf_grid_coarse_to_fine(net, [-1] * 3, [1] * 3, R)
    assert torch.equal(full > 0, c2f.sdf > 0)
    v1, f1 = marching_cubes(full, [-1] * 3, [1] * 3); v2, f2 = marching_cubes(c2f.sdf, [-1] * 3, [1] * 3)
    assert torch.equal(f1, f2) and (v1 - v2).abs().max() < 1e-5
    assert c2f.evaluated < {33: 0.7, 64: 0.45, 97: 0.3}[R] * R ** 3             # the saving grows with R


def test_chunking_does_not_change_the_grid():
    f = lambda p: torch.sin(3 * p).sum(-1)
    assert torch.equal(sdf_grid(f, [-1] * 3, [1] * 3, 20, chunk=7), sdf_grid(f, [-1] * 3, [1] * 3, 20))
    assert grid_points(torch.tensor([0., 0, 0]), torch.tensor([1., 2, 3]), 5)[4, 4, 4].tolist() == [1, 2, 3]


def test_largest_component_and_files(tmp_path):
    two = lambda p: torch.minimum(p.norm(dim=-1) - 0.5, (p - torch.tensor([0.75, 0.75, 0.75])).norm(dim=-1) - 0.15)
    m_all = extract_mesh(two, [-1] * 3, [1] * 3, resolution=48, largest_only=False)
    m = extract_mesh(two, [-1] * 3, [1] * 3, resolution=48)
    assert len(m.faces) < len(m_all.faces) and (m.verts.norm(dim=-1) - 0.5).abs().max() < 0.02
    assert m.faces.max() == len(m.verts) - 1
    from headbook.geometry.mesh import load_mesh
    for suffix in ("obj", "ply"):
        v, f = load_mesh(m.save(tmp_path / f"m.{suffix}"))
        assert np.allclose(v, m.verts.numpy(), atol=1e-5) and (f == m.faces.numpy()).all()


def test_empty_level_set_and_bad_inputs():
    v, f = marching_cubes(torch.ones(8, 8, 8), [-1] * 3, [1] * 3)
    assert v.shape == (0, 3) and f.shape == (0, 3)
    bad = torch.zeros(8, 8, 8); bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="sdf contains NaN"): marching_cubes(bad, [-1] * 3, [1] * 3)
    with pytest.raises(ValueError, match=r"sdf must have shape \[\*, \*, \*\]"):
        marching_cubes(torch.zeros(8, 8), [0] * 3, [1] * 3)
    with pytest.raises(ValueError, match="hi must exceed lo"): sdf_grid(lambda p: p[:, 0], [0, 0, 0], [1, 0, 1], 8)
    with pytest.raises(ValueError, match=r"lo must have shape \[3\]"): sdf_grid(lambda p: p[:, 0], [0, 0], [1, 1, 1], 8)
