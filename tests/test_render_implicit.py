"render.implicit: sphere tracing hits analytic shapes and agrees with the mesh renderer; IDR's point gradient."
import pytest, torch, trimesh
from headbook.geometry.cameras import look_at, intrinsics
from headbook.render import render_mesh, directional_sh
from headbook.render.implicit import camera_rays, sphere_trace, render_sdf, idr_surface_point

AX = torch.tensor([0.09, 0.12, 0.10])


def ellipsoid(x): return ((x / AX).norm(dim=-1) - 1) * AX.min()     # a lower bound on the distance


def exact_ellipsoid_hits(o, d):
    "Analytic ray-ellipsoid intersection: t of the first hit, and whether there is one."
    oo, dd = o / AX.to(o), d / AX.to(o)
    a, b, c = (dd * dd).sum(-1), 2 * (oo * dd).sum(-1), (oo * oo).sum(-1) - 1
    disc = b * b - 4 * a * c
    return (-b - disc.clamp_min(0).sqrt()) / (2 * a), disc > 0, disc / (b * b)


def camera(size, eye=(0.25, 0.1, 0.5)):
    R, t = look_at(torch.tensor([eye]), torch.zeros(1, 3)); K = intrinsics(1.4 * size, (size, size))
    return K, R, t


def test_sphere_hits_to_1e4():
    K, R, t = camera(96)
    o, d = camera_rays(K, R, t, (96, 96))
    tr = sphere_trace(lambda x: x.norm(dim=-1) - 0.1, o, d, near=0.2, far=1.0)
    assert tr.hit.sum() > 1000
    assert (tr.points[tr.hit].norm(dim=-1) - 0.1).abs().max() < 1e-4
    closest = (o - (o * d).sum(-1, keepdim=True) * d).norm(dim=-1)
    assert torch.equal(tr.hit, closest < 0.1)


def test_ellipsoid_hits_to_1e4_against_the_analytic_intersection():
    K, R, t = camera(128)
    o, d = camera_rays(K.double(), R.double(), t.double(), (128, 128))
    f = lambda x: ((x / AX.double()).norm(dim=-1) - 1) * float(AX.min())
    tr = sphere_trace(f, o, d, near=0.2, far=1.0, n_steps=200)
    t_true, hit_true, rel_disc = exact_ellipsoid_hits(o, d)
    clear = rel_disc.abs() > 1e-3                                                # not grazing
    assert torch.equal(tr.hit[clear], hit_true[clear])
    both = tr.hit & hit_true
    # distance of the hit to the surface (first order: |q(x)| / |grad q| with q = |x / s| - 1)
    x = tr.points[both].detach().requires_grad_(True)
    q = (x / AX.double()).norm(dim=-1) - 1
    gq, = torch.autograd.grad(q.sum(), x)
    assert (q.abs() / gq.norm(dim=-1)).max() < 1e-4                             # measured: <= 1.3e-5
    # along the ray (ill-conditioned at grazing incidence, so away from the silhouette)
    frontal = both & (rel_disc > 1e-2)
    assert (tr.t[frontal] - t_true[frontal]).abs().max() < 1e-4


def test_secant_fallback_when_the_field_overestimates_distance():
    K, R, t = camera(64)
    o, d = camera_rays(K, R, t, (64, 64))
    over = lambda x: 3.0 * (x.norm(dim=-1) - 0.1)                                 # steps 3x too long: overshoots
    tr = sphere_trace(over, o, d, near=0.2, far=1.0, n_samples=128, search_misses=True)
    closest = (o - (o * d).sum(-1, keepdim=True) * d).norm(dim=-1)
    clear = (closest - 0.1).abs() > 2e-3
    assert torch.equal(tr.hit[clear], (closest < 0.1)[clear])
    assert (tr.points[tr.hit].norm(dim=-1) - 0.1).abs().max() < 1e-4


@pytest.mark.parametrize("shape", ["sphere", "ellipsoid"])
def test_hit_mask_matches_mesh_renderer_silhouette(shape):
    s = AX if shape == "ellipsoid" else torch.full((3,), 0.1)
    fn = lambda x: ((x / s).norm(dim=-1) - 1) * s.min()
    ico = trimesh.creation.icosphere(subdivisions=5)
    v = torch.tensor(ico.vertices, dtype=torch.float32) * s; f = torch.tensor(ico.faces, dtype=torch.int64)
    K, R, t = camera(128)
    sh = directional_sh(torch.tensor([[0.3, 0.5, 1.0]]), color=0.8, ambient=0.3)
    ri = render_sdf(fn, K, R, t, (128, 128), sh=sh, near=0.2, far=1.0)
    rm = render_mesh(v[None], f, K, R, t, (128, 128), sh=sh)
    a, b = ri.mask.bool(), rm.mask.bool()
    iou = float((a & b).sum() / (a | b).sum())
    assert iou >= 0.99, iou                                                       # measured: 0.998
    both = (a & b)[:, 0]
    # same light, same normals: the shaded colours agree where both cover the pixel (mesh facets: small differences)
    assert (ri.image - rm.image).abs().permute(0, 2, 3, 1)[both].mean() < 0.02


def test_idr_surface_point_gradient_matches_the_analytic_derivative():
    K, R, t = camera(48)
    o, d = camera_rays(K.double(), R.double(), t.double(), (48, 48))
    r = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    tr = sphere_trace(lambda x: x.norm(dim=-1) - r, o, d, near=0.2, far=1.0, eps=1e-10, n_steps=200)
    idx = tr.hit[0].nonzero().squeeze(1)
    oo, dd, t0 = o[0, idx], d[0, idx], tr.t[0, idx]
    x = idr_surface_point(lambda p: p.norm(dim=-1) - r, oo, dd, t0)
    assert torch.allclose(x, tr.points[0, idx], atol=1e-12)
    w = torch.randn(len(idx), 3, dtype=torch.float64)
    (x * w).sum().backward()
    b = -(oo * dd).sum(-1)
    dt_dr = -r.detach() / torch.sqrt(b ** 2 - (oo * oo).sum(-1) + r.detach() ** 2)
    terms = dd * dt_dr[:, None] * w
    assert abs(float(r.grad) - float(terms.sum())) < 1e-8 * float(terms.abs().sum())


def test_bad_inputs():
    K, R, t = camera(16)
    with pytest.raises(ValueError, match=r"R must have shape \[1, 3, 3\]"): camera_rays(K, R[0], t, (16, 16))
    o, d = camera_rays(K, R, t, (16, 16))
    with pytest.raises(ValueError, match="origins contains NaN"):
        sphere_trace(ellipsoid, torch.full_like(o, float("nan")), d)
    with pytest.raises(ValueError, match=r"dirs must have shape \[1, 256, 3\]"): sphere_trace(ellipsoid, o, d[:, :5])
    with pytest.raises(ValueError, match=r"sh must have shape \[1, 9, 3\]"):
        render_sdf(ellipsoid, K, R, t, (16, 16), sh=torch.zeros(1, 9))
