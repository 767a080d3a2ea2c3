"2DGS reference rasteriser: analytic footprints, compositing order, finite differences, a photo fit, gsplat twin, rig."
import math
import pytest
import torch
from headbook.render import rasterize_2dgs, rasterize_2dgs_torch, sample_binding, rig_gaussians
from headbook.geometry.rotations import quaternion_to_matrix, axis_angle_to_quaternion

VM = torch.eye(4)[None]
KC = torch.tensor([[[100., 0, 32], [0, 100., 32], [0, 0, 1]]])

def pixel_grid(H, W):
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    return xs, ys

def test_fronto_parallel_footprint_is_the_analytic_ellipse():
    ang = 0.6
    q = axis_angle_to_quaternion(torch.tensor([[0., 0, ang]]))
    out = rasterize_2dgs(torch.tensor([[0.04, -0.02, 2.]]), q, torch.tensor([[0.25, 0.1, 0.]]), torch.tensor([0.8]),
                         torch.ones(1, 3), VM, KC, 64, 64)
    xs, ys = pixel_grid(64, 64)
    cx, cy = 32 + 100 * 0.04 / 2, 32 - 100 * 0.02 / 2
    dx, dy = xs - cx, ys - cy
    u = (math.cos(ang) * dx + math.sin(ang) * dy) / (100 * 0.25 / 2)       # rotate into the surfel's axes
    v = (-math.sin(ang) * dx + math.cos(ang) * dy) / (100 * 0.1 / 2)
    ref = 0.8 * torch.exp(-0.5 * (u ** 2 + v ** 2))
    ref = torch.where(ref >= 1 / 255, ref, torch.zeros_like(ref)).float()
    assert torch.allclose(out.alphas[0, ..., 0], ref, atol=1e-5)

def test_tilted_surfel_matches_ray_plane_intersection():
    "Independent reference: intersect each pixel ray with the surfel's plane, read (u, v), add the low-pass filter."
    aa = torch.tensor([[0.9, 0.4, 0.2]])
    q = axis_angle_to_quaternion(aa); Rw = quaternion_to_matrix(q)[0].double()
    mu = torch.tensor([0.05, 0.03, 1.5], dtype=torch.float64); s = torch.tensor([0.2, 0.08], dtype=torch.float64)
    out = rasterize_2dgs(mu[None].float(), q, torch.tensor([[0.2, 0.08, 0.]]), torch.tensor([0.9]), torch.ones(1, 3), VM, KC, 64, 64)
    xs, ys = pixel_grid(64, 64)
    d = torch.stack([(xs - 32) / 100, (ys - 32) / 100, torch.ones_like(xs)], -1)     # rays from the origin
    nrm = Rw[:, 2]
    lam = (mu @ nrm) / (d @ nrm)
    P = lam[..., None] * d - mu
    u, v = (P @ Rw[:, 0]) / s[0], (P @ Rw[:, 1]) / s[1]
    c2 = mu[:2] / mu[2] * 100 + 32
    g = torch.minimum(u ** 2 + v ** 2, 2 * ((xs - c2[0]) ** 2 + (ys - c2[1]) ** 2))
    ref = (0.9 * torch.exp(-0.5 * g)).clamp_max(0.999)
    ref = torch.where(ref >= 1 / 255, ref, torch.zeros_like(ref)).float()
    assert (ref > 0).sum() > 100
    assert torch.allclose(out.alphas[0, ..., 0], ref, atol=1e-4)

def test_compositing_order_and_formula():
    means = torch.tensor([[0., 0, 1.], [0., 0, 2.], [0.01, 0, 3.]])
    kw = dict(quats=torch.tensor([[1., 0, 0, 0]] * 3), scales=torch.tensor([[0.5, 0.5, 0.]] * 3))
    op = torch.tensor([0.6, 0.5, 0.9]); col = torch.eye(3)
    a = rasterize_2dgs(means, kw["quats"], kw["scales"], op, col, VM, KC, 64, 64)
    perm = torch.tensor([2, 0, 1])
    b = rasterize_2dgs(means[perm], kw["quats"], kw["scales"], op[perm], col[perm], VM, KC, 64, 64)
    assert torch.allclose(a.colors, b.colors, atol=1e-6) and torch.allclose(a.alphas, b.alphas, atol=1e-6)
    # swap the depths: the blue one is now in front
    c = rasterize_2dgs(means[[2, 1, 0]] * torch.tensor([0., 1, 1]), kw["quats"], kw["scales"], op, col, VM, KC, 64, 64)
    px = a.colors[0, 32, 32]
    # pixel centre (32.5, 32.5) is 0.5 px off; these surfels are 25+ px wide, so alpha ~ opacity
    assert px[0] > px[1] > px[2] and abs(px[0] - 0.6) < 2e-3 and abs(px[1] - 0.4 * 0.5) < 2e-3
    assert abs(a.alphas[0, 32, 32, 0] - (1 - 0.4 * 0.5 * 0.1)) < 2e-3
    assert c.colors[0, 32, 32, 2] > c.colors[0, 32, 32, 0]
    # expected depth is the weighted mean of centre depths
    w = torch.tensor([0.6, 0.4 * 0.5, 0.4 * 0.5 * 0.9])
    assert abs(a.depths[0, 32, 32, 0] - (w * torch.tensor([1., 2, 3])).sum() / w.sum()) < 1e-2

def test_tiling_does_not_change_the_image():
    g = torch.Generator().manual_seed(1)
    N = 60
    means = torch.cat([(torch.rand(N, 2, generator=g) - 0.5) * 1.2, 1 + torch.rand(N, 1, generator=g)], 1)
    q = torch.nn.functional.normalize(torch.randn(N, 4, generator=g), dim=-1)
    sc = torch.rand(N, 3, generator=g) * 0.1 + 0.02
    op = torch.rand(N, generator=g); col = torch.rand(N, 3, generator=g)
    a = rasterize_2dgs_torch(means, q, sc, op, col, VM, KC, 64, 48, tile_size=16)
    b = rasterize_2dgs_torch(means, q, sc, op, col, VM, KC, 64, 48, tile_size=64)
    c = rasterize_2dgs_torch(means, q, sc, op, col, VM, KC, 64, 48, tile_size=8, chunk_elems=5000)
    for x, y in [(a, b), (a, c)]:
        assert torch.allclose(x.colors, y.colors, atol=1e-5) and torch.allclose(x.alphas, y.alphas, atol=1e-5)

def test_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(2)
    N = 4
    means = torch.tensor([[0.02, 0.01, 1.], [-0.03, 0.02, 1.2], [0.0, -0.02, 1.4], [0.03, 0.03, 0.9]], dtype=torch.float64)
    q = torch.nn.functional.normalize(torch.tensor([[1., 0.2, 0.1, 0.], [1., -0.1, 0.3, 0.2], [0.9, 0.1, -0.2, 0.4], [1., 0, 0, 0.3]], dtype=torch.float64), dim=-1)
    sc = torch.tensor([[0.03, 0.02, 0.], [0.025, 0.03, 0.], [0.04, 0.02, 0.], [0.02, 0.02, 0.]], dtype=torch.float64)
    op = torch.tensor([0.5, 0.6, 0.7, 0.4], dtype=torch.float64); col = torch.rand(N, 3, generator=g, dtype=torch.float64)
    K = torch.tensor([[[60., 0, 12], [0, 60., 12], [0, 0, 1]]], dtype=torch.float64)
    w = torch.rand(1, 24, 24, 3, generator=g, dtype=torch.float64)
    def f(means, sc, op, col):
        o = rasterize_2dgs(means, q, sc, op, col, VM.double(), K, 24, 24, backend="torch")
        return (o.colors * w).sum() + o.alphas.sum() + (o.depths * o.alphas).sum()
    assert torch.autograd.gradcheck(f, (means.requires_grad_(), sc.requires_grad_(), op.requires_grad_(), col.requires_grad_()),
                                    eps=1e-6, atol=1e-4, rtol=1e-3)

def test_fit_a_64px_photo_to_25db_on_cpu():
    from skimage import data, transform
    photo = torch.tensor(transform.resize(data.astronaut()[20:220, 140:340] / 255.0, (64, 64), anti_aliasing=True), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    N, f = 300, 64.
    K = torch.tensor([[[f, 0, 32], [0, f, 32], [0, 0, 1]]])
    xyz = torch.cat([(torch.rand(N, 2, generator=g) - 0.5), torch.ones(N, 1)], 1).requires_grad_()
    logs = torch.full((N, 2), math.log(1.5 / f)).requires_grad_(); ang = torch.zeros(N).requires_grad_()
    op = torch.ones(N).requires_grad_(); col = torch.zeros(N, 3).requires_grad_()
    opt = torch.optim.Adam([{"params": [xyz], "lr": 5e-3}, {"params": [logs, ang, op, col], "lr": 5e-2}])
    for it in range(100):                                                    # fixed step budget
        z0 = torch.zeros_like(ang)
        qq = torch.stack([torch.cos(ang / 2), z0, z0, torch.sin(ang / 2)], -1)
        o = rasterize_2dgs(xyz, qq, torch.cat([logs.exp(), torch.zeros(N, 1)], 1), torch.sigmoid(op), torch.sigmoid(col), VM, K, 64, 64)
        loss = ((o.colors[0] - photo) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    assert -10 * math.log10(loss.item()) >= 25.0

def test_bad_inputs():
    m = torch.zeros(2, 3); q = torch.tensor([[1., 0, 0, 0]] * 2); s = torch.ones(2, 3); o = torch.ones(2); c = torch.ones(2, 3)
    with pytest.raises(ValueError, match="means"): rasterize_2dgs(m[:, :2], q, s, o, c, VM, KC, 8, 8)
    with pytest.raises(ValueError, match="quats"): rasterize_2dgs(m, q[:, :3], s, o, c, VM, KC, 8, 8)
    with pytest.raises(ValueError, match="Ks"): rasterize_2dgs(m, q, s, o, c, VM, KC[0], 8, 8)
    with pytest.raises(ValueError, match="backend"): rasterize_2dgs(m, q, s, o, c, VM, KC, 8, 8, backend="cuda")
    with pytest.raises(ValueError, match="CUDA"): rasterize_2dgs(m, q, s, o, c, VM, KC, 8, 8, backend="gsplat")

def _has_gsplat():
    try:
        import gsplat  # noqa: F401
        return True
    except Exception:
        return False

@pytest.mark.skipif(not (torch.cuda.is_available() and _has_gsplat()), reason="needs CUDA and gsplat")
def test_gsplat_twin_forward_and_backward():
    g = torch.Generator().manual_seed(3)
    N = 200
    dev = "cuda"
    means = torch.cat([(torch.rand(N, 2, generator=g) - 0.5), 1 + torch.rand(N, 1, generator=g)], 1).to(dev)
    q = torch.nn.functional.normalize(torch.randn(N, 4, generator=g), dim=-1).to(dev)
    sc = (torch.rand(N, 3, generator=g) * 0.05 + 0.01).to(dev)
    op = torch.rand(N, generator=g).to(dev); col = torch.rand(N, 3, generator=g).to(dev)
    K = torch.tensor([[[64., 0, 32], [0, 64., 32], [0, 0, 1]]], device=dev); vm = torch.eye(4, device=dev)[None]
    cot = torch.randn(1, 64, 64, 3, generator=g).to(dev)
    outs, grads = [], []
    for backend in ("torch", "gsplat"):
        ps = [x.clone().requires_grad_() for x in (means, sc, op, col)]
        o = rasterize_2dgs(ps[0], q, ps[1], ps[2], ps[3], vm, K, 64, 64, backend=backend)
        (o.colors * cot).sum().backward()
        outs.append(o); grads.append([p.grad for p in ps])
    a, b = outs
    assert (a.colors - b.colors).abs().max() < 1e-3 and (a.alphas - b.alphas).abs().max() < 1e-3
    m = a.alphas[..., 0] > 0.5
    assert (a.depths[m] - b.depths[m]).abs().max() < 1e-3
    assert (a.normals - b.normals).abs().max() < 1e-2
    for ga, gb in zip(*grads):
        assert torch.allclose(ga, gb, rtol=1e-2, atol=1e-4 * ga.abs().max())

def test_rigged_gaussians_stay_on_the_surface_under_jaw_and_neck_rotation():
    from headbook.models import load_head_model
    import trimesh
    try:
        model = load_head_model("synthhead")
    except Exception as e:  # the built-in head ships with the package; fail loudly if it does not load
        raise AssertionError(f"synthhead did not load: {e}")
    faces = model.faces.long()
    rest = model().vertices
    bind = sample_binding(rest, faces, 500, generator=torch.Generator().manual_seed(0))
    bind.offset = torch.zeros(500)
    pose = model(jaw_pose=torch.tensor([[0.35, 0., 0.]]), neck_pose=torch.tensor([[0.2, 0.4, 0.1]])).vertices
    assert (pose - rest).abs().max() > 0.01                                  # it really moved
    g = rig_gaussians(pose, faces, bind)
    mesh = trimesh.Trimesh(pose[0].numpy(), faces.numpy(), process=False)
    _, dist, tri = trimesh.proximity.closest_point(mesh, g.means[0].numpy())
    assert dist.max() < 1e-5                                                 # float32 round-off on a 0.2 m head
    # axes stay in the posed triangle's plane
    Rg = quaternion_to_matrix(g.quats[0])
    fn = torch.tensor(mesh.face_normals[bind.face_idx.numpy()], dtype=torch.float32)
    assert (Rg[..., 0] * fn).sum(-1).abs().max() < 1e-4 and (Rg[..., 1] * fn).sum(-1).abs().max() < 1e-4
    # an offset moves them off the surface by offset * triangle size, along the normal
    bind.offset = torch.full((500,), 0.5)
    g2 = rig_gaussians(pose, faces, bind)
    from headbook.render.rig import triangle_size
    expect = 0.5 * triangle_size(pose, faces)[0, bind.face_idx]
    assert torch.allclose((g2.means - g.means)[0].norm(dim=-1), expect, atol=1e-6)
