"""Mesh renderer: silhouettes against an analytic reference, SH shading against the closed form, the torch z-buffer
against PyTorch3D's naive kernel (face ids, images, gradients), gradients, a fit."""
import math
import pytest
import torch
import trimesh
from headbook.geometry.cameras import look_at, intrinsics, project_points, weak_perspective_project, ndc_to_pixels
from headbook.render import (render_mesh, render_mesh_weak_perspective, RasterSettings, soft_settings, sh_shading,
                             directional_sh, rasterize, pinhole_to_ndc, SH_CONSTANTS)
from headbook.render.mesh import _zbuffer

torch.manual_seed(0)

def sphere(sub=3, r=0.1):
    m = trimesh.creation.icosphere(sub)
    return torch.tensor(m.vertices, dtype=torch.float32)[None] * r, torch.tensor(m.faces)

def cube(size=0.1):
    m = trimesh.creation.box(extents=(size, size * 0.8, size * 1.2))
    return torch.tensor(m.vertices, dtype=torch.float32)[None], torch.tensor(m.faces)

def camera(eye, size, focal=150.):
    R, t = look_at(torch.tensor([eye], dtype=torch.float32), torch.zeros(1, 3))
    return intrinsics(focal, size), R, t

def analytic_silhouette(V, Fc, K, R, t, size):
    "Union of the projected triangles tested at pixel centres; no rasteriser involved."
    uv, _ = project_points(V, K, R, t)
    tri = uv[0][Fc]                                              # [F, 3, 2]
    H, W = size
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    p = torch.stack([xs, ys], -1).reshape(-1, 1, 2)
    def edge(a, b): return (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])
    e0, e1, e2 = edge(tri[None, :, 0], tri[None, :, 1]), edge(tri[None, :, 1], tri[None, :, 2]), edge(tri[None, :, 2], tri[None, :, 0])
    inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
    return inside.any(1).reshape(H, W)

BACKENDS = {"zbuffer": RasterSettings(backend="zbuffer"), "tiles": RasterSettings(backend="pytorch3d", tile_size=32),
            "naive": RasterSettings(backend="pytorch3d", tile_size=0)}
NAIVE = BACKENDS["naive"]

@pytest.mark.parametrize("mesh,eye,size", [(sphere, [0.05, 0.1, 0.5], (64, 80)), (cube, [0.3, 0.25, 0.4], (72, 64))])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_silhouette_matches_analytic_projection(mesh, eye, size, backend):
    V, Fc = mesh()
    K, R, t = camera(eye, size)
    out = render_mesh(V, Fc, K, R, t, size, settings=BACKENDS[backend])
    ref = analytic_silhouette(V, Fc, K, R, t, size)
    got = out.mask[0, 0] > 0.5
    iou = (got & ref).sum() / (got | ref).sum()
    assert ref.sum() > 300 and iou >= 0.98, float(iou)

def test_weak_perspective_silhouette_and_vertex_position():
    V, Fc = sphere()
    cam = torch.tensor([[4.0, 0.03, -0.02]])
    out = render_mesh_weak_perspective(V, Fc, cam, (64, 64))
    px = ndc_to_pixels(weak_perspective_project(V, cam), (64, 64))[0]      # [V, 2]
    c = px.mean(0); r = (px - c).norm(dim=-1).max()
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    disk = ((xs - c[0]) ** 2 + (ys - c[1]) ** 2) < r ** 2
    got = out.mask[0, 0] > 0.5
    assert (got & disk).sum() / (got | disk).sum() > 0.97
    assert torch.allclose(c, torch.tensor([(4 * 0.03 + 1) * 32, (1 + 4 * 0.02) * 32]), atol=1e-3)

@pytest.mark.parametrize("shading,tol", [("pixel", 0.01), ("vertex", 0.03)])
def test_sh_shading_of_a_sphere_matches_closed_form(shading, tol):
    V, Fc = sphere(4)
    V = V / V.norm(dim=-1, keepdim=True) * 0.1                               # exact sphere vertices
    size = (96, 96); K, R, t = camera([0., 0, 0.6], size, focal=200.)
    sh = torch.randn(1, 9, 3) * 0.3; sh[:, 0] += 2.0
    out = render_mesh(V, Fc, K, R, t, size, sh=sh, albedo=torch.full_like(V, 0.5), settings=RasterSettings(shading=shading))
    # closed form: pixel ray ∩ sphere -> world normal n -> 0.5 * sum_k sh_k c_k Y_k(n)
    ys, xs = torch.meshgrid(torch.arange(96) + 0.5, torch.arange(96) + 0.5, indexing="ij")
    d_cam = torch.stack([(xs - K[0, 0, 2]) / K[0, 0, 0], (ys - K[0, 1, 2]) / K[0, 1, 1], torch.ones_like(xs)], -1)
    d = torch.nn.functional.normalize(d_cam @ R[0], dim=-1)                  # world ray directions
    o = -(R[0].T @ t[0])                                                     # camera centre
    b = (d * o).sum(-1); disc = b ** 2 - (o @ o - 0.1 ** 2)
    hit = disc > 0
    s = -b - disc.clamp_min(0).sqrt()
    n = (o + s[..., None] * d) / 0.1
    x, y, z = n.unbind(-1)
    Y = torch.stack([torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], -1) * SH_CONSTANTS
    ref = 0.5 * (Y @ sh[0])                                                  # [H, W, 3]
    interior = hit & (disc > 0.25 * (o @ o - (o @ o - 0.1 ** 2)) * 0 + 0.3 * 0.1 ** 2) & (out.mask[0, 0] > 0)
    err = (out.image[0].permute(1, 2, 0) - ref)[interior].abs()
    assert interior.sum() > 1000
    assert err.mean() < tol and err.max() < 5 * tol, (err.mean(), err.max())

def test_gradients_reach_vertices_albedo_light_camera():
    V, Fc = sphere(2)
    size = (48, 48); K, R, t = camera([0.02, 0.03, 0.5], size)
    V = V.clone().requires_grad_(); alb = torch.rand_like(V).requires_grad_()
    sh = directional_sh(torch.tensor([[0.3, 0.2, 1.]]), 0.8, 0.3).requires_grad_()
    K = K.clone().requires_grad_(); R = R.clone().requires_grad_(); t = t.clone().requires_grad_()
    for settings in (RasterSettings(), soft_settings(1.0)):
        out = render_mesh(V, Fc, K, R, t, size, albedo=alb, sh=sh, settings=settings)
        (out.image * torch.rand_like(out.image)).sum().backward()
        for name, x in [("vertices", V), ("albedo", alb), ("sh", sh), ("K", K), ("R", R), ("t", t)]:
            assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all(), name
            x.grad = None

def test_soft_mask_has_silhouette_gradient():
    V, Fc = sphere(2)
    size = (48, 48); K, R, t = camera([0., 0, 0.5], size)
    t = t.clone().requires_grad_()
    out = render_mesh(V, Fc, K, R, t, size, settings=soft_settings(1.0))
    out.mask[..., :, 24:].sum().backward()                                    # right half of the silhouette
    with torch.no_grad():                                                     # finite differences, 0.3 px
        e = torch.tensor([[1e-3, 0, 0]])
        fd = (render_mesh(V, Fc, K, R, t + e, size, settings=soft_settings(1.0)).mask[..., :, 24:].sum()
              - render_mesh(V, Fc, K, R, t - e, size, settings=soft_settings(1.0)).mask[..., :, 24:].sum()) / 2e-3
    # same sign as finite differences. PyTorch3D's `dists` backward (CPU) comes out several times larger than
    # finite differences here (measured 4.8e4 vs 9.4e3), so we do not test the magnitude; see the chapter.
    assert fd > 0 and t.grad[0, 0] > 0

def test_recover_translation_and_light():
    "Honest convergence: start 1.3 cm and a different light away; recover both from the image alone."
    V, Fc = sphere(3)
    size = (64, 64); K, R, t_true = camera([0., 0, 0.5], size)
    alb = (0.5 + 0.3 * torch.sin(V * 25)).clamp(0, 1)                        # a smooth texture to hold on to
    sh_true = directional_sh(torch.tensor([[0.4, 0.3, 1.]]), 0.7, 0.4)
    target = render_mesh(V, Fc, K, R, t_true, size, albedo=alb, sh=sh_true).image.detach()
    t = (t_true + torch.tensor([[0.01, -0.008, 0.0]])).requires_grad_()
    sh = directional_sh(torch.tensor([[-0.2, 0.0, 1.]]), 0.5, 0.3).requires_grad_()
    opt = torch.optim.Adam([{"params": [t], "lr": 1e-3}, {"params": [sh], "lr": 2e-2}])
    for it in range(80):
        img = render_mesh(V, Fc, K, R, t, size, albedo=alb, sh=sh).image
        loss = ((img - target) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    err_t = (t - t_true).detach().norm()
    assert err_t < 1.5e-3, float(err_t)                                      # < 1.5 mm from 13 mm
    n = torch.nn.functional.normalize(torch.randn(1, 500, 3), dim=-1)
    n = n[:, n[0, :, 2] > 0.2]                                               # normals the camera sees
    err_light = (sh_shading(n, sh.detach()) - sh_shading(n, sh_true)).abs().mean()
    assert err_light < 0.03, float(err_light)

def test_batch_has_one_camera_per_element_and_texture():
    V, Fc = sphere(2)
    K1, R1, t1 = camera([0., 0, 0.5], (32, 32)); K2, R2, t2 = camera([0.4, 0, 0.3], (32, 32))
    K, R, t = torch.cat([K1, K2]), torch.cat([R1, R2]), torch.cat([t1, t2])
    out = render_mesh(V.expand(2, -1, -1), Fc, K, R, t, (32, 32))
    single = render_mesh(V, Fc, K2, R2, t2, (32, 32))
    assert torch.allclose(out.image[1], single.image[0], atol=1e-5) and torch.allclose(out.mask[1], single.mask[0])
    # a constant UV texture reproduces a constant per-vertex albedo
    uvs = (0.1 + 0.8 * torch.rand(V.shape[1], 2, generator=torch.Generator().manual_seed(0)), Fc)   # away from the border (zero padding)
    tex = torch.full((1, 3, 8, 8), 0.3)
    a = render_mesh(V, Fc, K1, R1, t1, (32, 32), albedo=tex, uvs=uvs).image
    b = render_mesh(V, Fc, K1, R1, t1, (32, 32), albedo=torch.full_like(V, 0.3)).image
    assert torch.allclose(a, b, atol=1e-5)

def test_bad_inputs_raise_clear_errors():
    V, Fc = sphere(1)
    K, R, t = camera([0., 0, 0.5], (16, 16))
    with pytest.raises(ValueError, match="vertices"): render_mesh(V[0], Fc, K, R, t, (16, 16))
    with pytest.raises(ValueError, match="K"): render_mesh(V, Fc, K[0], R, t, (16, 16))
    with pytest.raises(ValueError, match="sh"): render_mesh(V, Fc, K, R, t, (16, 16), sh=torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="faces"): render_mesh(V, Fc + 1000, K, R, t, (16, 16))
    with pytest.raises(ValueError, match="uvs"): render_mesh(V, Fc, K, R, t, (16, 16), albedo=torch.ones(1, 3, 4, 4))
    with pytest.raises(ValueError, match="shading"): render_mesh(V, Fc, K, R, t, (16, 16), settings=RasterSettings(shading="flat"))

# ---- the torch z-buffer (backend="zbuffer") against its reference twin, PyTorch3D's naive kernel ----

def triangle_soup(n=150, seed=0):
    "Random overlapping triangles of both windings, 0.3-0.7 m in front of a camera at the origin."
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 1, 3, generator=g) * torch.tensor([0.3, 0.3, 0.4]) + torch.tensor([-0.15, -0.15, 0.3])
    V = (c + (torch.rand(n, 3, 3, generator=g) - 0.5) * 0.12).reshape(1, -1, 3)
    return V, torch.arange(3 * n).reshape(n, 3)

def head():
    from headbook.models import load_head_model
    m = load_head_model("synthhead")
    return m(jaw_pose=torch.tensor([[0.2, 0., 0.]])).vertices.detach(), m.faces.long()

def compare_face_ids(fz, fn):
    "Fraction of pixels whose face id differs, and checks that barycentrics and depths agree where they match."
    pz, pn = fz.pix_to_face, fn.pix_to_face
    same = pz == pn
    assert torch.equal(fz.bary_coords[same[..., 0]], fn.bary_coords[same[..., 0]])   # bit for bit
    assert torch.equal(fz.zbuf[same], fn.zbuf[same])
    return 1 - same.float().mean().item()

@pytest.mark.parametrize("case", ["soup", "soup_cull", "soup_perspective", "head_front", "head_side_nonsquare", "head_below_wide"])
def test_zbuffer_face_ids_match_pytorch3d(case):
    if case.startswith("soup"):
        V, Fc = triangle_soup()
        size = (48, 64); K = intrinsics(60., size); R = torch.eye(3)[None]; t = torch.zeros(1, 3)
    else:
        V, Fc = head()
        eye, size = {"head_front": ([0.02, 0.03, 0.6], (64, 64)), "head_side_nonsquare": ([0.45, 0.1, 0.3], (80, 56)),
                     "head_below_wide": ([-0.2, -0.35, 0.4], (48, 72))}[case]
        K, R, t = camera(eye, size, focal=90.)
    kw = dict(cull_backfaces=case.endswith("cull"), perspective_correct=case.endswith("perspective"))
    ndc = pinhole_to_ndc(V, K, R, t, size)
    fz = rasterize(ndc, Fc, size, RasterSettings(backend="zbuffer", **kw))
    fn = rasterize(ndc, Fc, size, RasterSettings(backend="pytorch3d", tile_size=0, **kw))
    assert (fn.pix_to_face >= 0).float().mean() > 0.1 and fz.dists is None
    mismatch = compare_face_ids(fz, fn)
    # measured: 0 mismatches in every case (same float32 formulas in the same order as PyTorch3D's C++); allow
    # one pixel in 10^4 for a centre lying on an edge up to a rounding difference on another CPU.
    assert mismatch <= 1e-4, mismatch

def test_zbuffer_batch_of_different_cameras_and_big_triangles():
    V, Fc = head()
    size = (56, 72)
    (K1, R1, t1), (K2, R2, t2) = camera([0., 0.05, 0.5], size, 100.), camera([-0.4, 0., 0.35], size, 100.)
    K, R, t = torch.cat([K1, K2]), torch.cat([R1, R2]), torch.cat([t1, t2])
    V2 = torch.cat([V, V * 1.1])
    ndc = pinhole_to_ndc(V2, K, R, t, size)
    fz = rasterize(ndc, Fc, size, RasterSettings(backend="zbuffer"))
    fn = rasterize(ndc, Fc, size, NAIVE)
    assert compare_face_ids(fz, fn) <= 1e-4
    assert (fz.pix_to_face[1][fz.pix_to_face[1] >= 0] >= Fc.shape[0]).all()               # packed ids: b * F + f
    for b in range(2):                                                                     # = the same image alone
        single = rasterize(ndc[b:b + 1], Fc, size, RasterSettings(backend="zbuffer"))
        assert torch.equal(single.pix_to_face[0], fz.pix_to_face[b] - b * Fc.shape[0] * (fz.pix_to_face[b] >= 0))
    # two triangles larger than the image, split over many small blocks: the chunking must not change anything
    quad = torch.tensor([[[-3., -3, 0.5], [3, -3, 0.7], [3, 3, 0.9], [-3, 3, 0.7]]])
    qf = torch.tensor([[0, 1, 2], [0, 2, 3]])
    qn = torch.cat([quad[..., :2] / quad[..., 2:] * 2, quad[..., 2:]], -1)                 # some NDC with depth
    p_small = _zbuffer(qn[:, qf], size, chunk=100)
    ref = rasterize(qn, qf, size, NAIVE).pix_to_face[..., 0]
    assert torch.equal(p_small, _zbuffer(qn[:, qf], size)) and (ref >= 0).float().mean() > 0.95   # the shared edge: neither
    assert (p_small != ref).float().mean() <= 1e-4

def test_zbuffer_drops_faces_behind_the_camera_like_pytorch3d():
    size = (32, 32)
    ndc = torch.tensor([[[-0.5, -0.5, 1.0], [0.5, -0.5, 1.0], [0.0, 0.5, 1.0],       # in front
                         [-0.9, -0.9, -0.2], [0.9, -0.9, 1.0], [0.0, 0.9, 1.0]]])    # one vertex behind
    fc = torch.tensor([[0, 1, 2], [3, 4, 5]])
    fz = rasterize(ndc, fc, size, RasterSettings(backend="zbuffer"))
    fn = rasterize(ndc, fc, size, NAIVE)
    assert torch.equal(fz.pix_to_face, fn.pix_to_face)
    assert set(fz.pix_to_face.unique().tolist()) == {-1, 0}

@pytest.mark.parametrize("shading,weak", [("vertex", False), ("pixel", False), ("pixel", True)])
def test_zbuffer_images_and_gradients_match_pytorch3d(shading, weak):
    "Forward outputs and the gradients of a random cotangent w.r.t. vertices, albedo, light and camera."
    V, Fc = head()
    size = (48, 56)
    g = torch.Generator().manual_seed(1)
    K, R, t = camera([0.15, 0.05, 0.45], size, focal=90.)
    cam = torch.tensor([[7.0, 0.01, 0.02]])
    alb0 = 0.3 + 0.5 * torch.rand(V.shape, generator=g)
    sh0 = directional_sh(torch.tensor([[0.3, 0.4, 1.]]), 0.8, 0.3)
    cot = torch.randn(1, 3, *size, generator=g); cot_d = torch.randn(1, 1, *size, generator=g)
    res = {}
    for name in ("zbuffer", "naive"):
        s = RasterSettings(backend="zbuffer" if name == "zbuffer" else "pytorch3d", tile_size=0, shading=shading)
        leaves = [x.clone().requires_grad_() for x in (V, alb0, sh0, K, R, t, cam)]
        Vg, alb, sh, Kg, Rg, tg, camg = leaves
        if weak: out = render_mesh_weak_perspective(Vg, Fc, camg, size, albedo=alb, sh=sh, settings=s)
        else: out = render_mesh(Vg, Fc, Kg, Rg, tg, size, albedo=alb, sh=sh, settings=s)
        ((out.image * cot).sum() + (out.depth * cot_d).sum() + out.normals.sum()).backward()
        res[name] = (out, {n: x.grad for n, x in zip(["vertices", "albedo", "sh", "K", "R", "t", "cam"], leaves)})
    (a, ga), (b, gb) = res["zbuffer"], res["naive"]
    assert torch.equal(a.fragments.pix_to_face, b.fragments.pix_to_face) and a.mask.sum() > 300
    for k in ("image", "mask", "depth", "normals"):
        assert (getattr(a, k) - getattr(b, k)).abs().max() <= 1e-5, k
    assert torch.equal(a.visibility, b.visibility)
    names = ["vertices", "albedo", "sh"] + (["cam"] if weak else ["K", "R", "t"])
    for n in names:
        assert gb[n] is not None and gb[n].abs().max() > 0, n
        err = (ga[n] - gb[n]).abs().max() / gb[n].abs().max()
        assert err < 1e-4, (n, float(err))                                              # measured ~1e-6 (round-off)

def test_backend_setting_is_checked():
    V, Fc = sphere(1)
    K, R, t = camera([0., 0, 0.5], (16, 16))
    with pytest.raises(ValueError, match="backend"):
        render_mesh(V, Fc, K, R, t, (16, 16), settings=RasterSettings(backend="opengl"))
    with pytest.raises(ValueError, match="zbuffer"):
        render_mesh(V, Fc, K, R, t, (16, 16), settings=RasterSettings(backend="zbuffer", soft_sigma=1.0))
    assert RasterSettings().resolved_backend("cpu") in ("zbuffer", "pytorch3d")
    assert RasterSettings(backend="auto").resolved_backend("cpu") == "zbuffer"
    assert soft_settings(1.0, backend="auto").resolved_backend("cpu") == "pytorch3d"
    assert RasterSettings(backend="auto").resolved_backend("cuda") == "pytorch3d"

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    V, Fc = sphere(3)
    K, R, t = camera([0.05, 0.1, 0.5], (64, 64))
    sh = directional_sh(torch.tensor([[0.3, 0.2, 1.]]), 0.8, 0.3)
    a = render_mesh(V, Fc, K, R, t, (64, 64), sh=sh)
    b = render_mesh(V.cuda(), Fc.cuda(), K.cuda(), R.cuda(), t.cuda(), (64, 64), sh=sh.cuda())
    assert (a.mask != b.mask.cpu()).float().mean() < 1e-3
    assert (a.image - b.image.cpu()).abs().mean() < 1e-3
    z = render_mesh(V.cuda(), Fc.cuda(), K.cuda(), R.cuda(), t.cuda(), (64, 64), sh=sh.cuda(),
                    settings=RasterSettings(backend="zbuffer"))                            # the torch z-buffer on CUDA
    assert (z.mask != b.mask).float().mean() < 1e-3 and (z.image - b.image).abs().mean() < 1e-3
