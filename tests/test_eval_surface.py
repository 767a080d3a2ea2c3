"NPHM surface metrics: definitions on known cases, visibility, masks, bad input."
import numpy as np, pytest, trimesh
from headbook.eval.surface import (above_plane, fibonacci_sphere, near_region, point_cloud_metrics, surface_metrics,
                                   visible_surface_samples)


def test_metric_definitions_by_hand():
    P = np.array([[0., 0, 0], [0.010, 0, 0]]); G = np.array([[0., 0, 0.003]])       # metres -> mm
    m = point_cloud_metrics(P, G)
    acc = np.array([3.0, np.hypot(10, 3)]); comp = np.array([3.0])
    assert np.isclose(m.accuracy, acc.mean()) and np.isclose(m.completeness, 3.0)
    assert np.isclose(m.chamfer_l1, (acc.mean() + 3) / 2) and np.isclose(m.chamfer_l2, ((acc ** 2).mean() + 9) / 2)
    prec = [(acc <= t).mean() for t in (1, 5, 10, 20)]; rec = [(comp <= t).mean() for t in (1, 5, 10, 20)]
    assert m.precision == prec and m.recall == rec
    assert m.fscore[0] == 0.0 and np.isclose(m.fscore[1], 2 * 0.5 * 1 / 1.5)
    assert np.isnan(m.normal_consistency)


def test_normal_consistency_absolute_both_directions():
    g = np.random.default_rng(0); P = g.normal(size=(500, 3)) * 0.1
    n = g.normal(size=(500, 3))
    m = point_cloud_metrics(P, P, n, -3 * n)
    assert np.isclose(m.normal_consistency, 1.0)
    perp = np.cross(n, g.normal(size=(500, 3)))
    assert point_cloud_metrics(P, P, n, perp).normal_consistency < 1e-9


def test_visible_samples_ignore_hidden_cavity():
    # a cube with a small cube hidden inside: area sampling sees the inner cube, visible sampling does not
    outer = trimesh.creation.box((0.2, 0.2, 0.2)); inner = trimesh.creation.box((0.05, 0.05, 0.05))
    both = trimesh.util.concatenate([outer, inner])
    P, N = visible_surface_samples(both.vertices, both.faces, resolution=48)
    assert np.allclose(np.abs(P).max(1), 0.1, atol=1e-9)
    m = surface_metrics(both.vertices, both.faces, outer.vertices, outer.faces, n_points=5000, resolution=48)
    assert m.completeness < 3 and m.accuracy < 3
    m_all = surface_metrics(both.vertices, both.faces, outer.vertices, outer.faces, n_points=5000, visible=False)
    assert m_all.accuracy > m.accuracy + 3   # the hidden cube (about 8 % of the area, 75 mm inside) counts


def test_masks_and_cameras():
    c = fibonacci_sphere(12)
    assert c.shape == (12, 3) and np.allclose(np.linalg.norm(c, axis=1), 1) and c[0, 1] == 1 and c[-1, 1] == -1
    pts = np.array([[0, 0.1, 0], [0, -0.1, 0]])
    assert above_plane(pts, np.zeros(3), np.array([0, 0, 1.0]), np.array([1.0, 0, 0]), margin=0.05).tolist() == [True, False]
    rv = np.array([[0., 0, 0]]); rn = np.array([[0., 0, 1]])
    q = np.array([[0.01, 0, 0.001], [0, 0, 0.05], [0.2, 0, 0]])
    assert near_region(q, rv, rn, max_plane=0.02, max_point=0.04).tolist() == [True, False, False]


def test_keep_mask_and_bad_input():
    s = trimesh.creation.icosphere(3, radius=0.1)
    m = surface_metrics(s.vertices, s.faces, s.vertices, s.faces, n_points=3000, resolution=48, keep=lambda p: p[:, 1] > 0)
    assert m.chamfer_l1 < 3
    with pytest.raises(ValueError, match="no surface samples"):
        surface_metrics(s.vertices, s.faces, s.vertices, s.faces, n_points=10, resolution=16, keep=lambda p: p[:, 1] > 1)
    with pytest.raises(ValueError, match="pred_points"):
        point_cloud_metrics(np.zeros((0, 3)), np.zeros((3, 3)))
