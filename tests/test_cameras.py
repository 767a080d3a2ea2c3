import pytest
import torch
from headbook.geometry.cameras import *
from headbook.geometry.rotations import axis_angle_to_matrix


def rand_cam(B, gen):
    eye = torch.randn(B, 3, generator=gen) * 0.3 + torch.tensor([0., 0., 1.0])
    R, t = look_at(eye, torch.zeros(B, 3))
    K = intrinsics(torch.tensor(600.), (120, 160), batch=B)
    K[:, 0, 2] += torch.randn(B, generator=gen) * 5
    return K, R, t


def test_project_unproject_roundtrip():
    g = torch.Generator().manual_seed(0)
    K, R, t = rand_cam(4, g)
    X = torch.randn(4, 50, 3, generator=g) * 0.1
    uv, z = project_points(X, K, R, t)
    assert uv.shape == (4, 50, 2) and z.shape == (4, 50) and (z > 0).all()
    assert torch.allclose(unproject_points(uv, z, K, R, t), X, atol=1e-5)


def test_look_at_orientation():
    R, t = look_at(torch.tensor([[0.5, 0.2, 1.0]]), torch.zeros(1, 3))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3)[None], atol=1e-6)
    assert torch.det(R).item() == pytest.approx(1.0, abs=1e-6)
    Xc = world_to_camera(torch.zeros(1, 1, 3), R, t)
    assert torch.allclose(Xc[0, 0, :2], torch.zeros(2), atol=1e-6)   # the target is on the optical axis


def test_weak_perspective_matches_distant_pinhole():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2, 30, 3, generator=g) * 0.05
    cam = torch.tensor([[7.0, 0.01, 0.02], [9.0, -0.02, 0.0]])
    px = ndc_to_pixels(weak_perspective_project(X, cam), (224, 224))
    K, R, t = weak_perspective_to_pinhole(cam, (224, 224), distance=1e4)
    px2, _ = project_points(X, K, R, t)
    assert torch.allclose(px, px2, atol=1e-2)


def test_bad_inputs():
    K, R, t = rand_cam(1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="X must have shape"):
        project_points(torch.zeros(1, 5, 2), K, R, t)
    with pytest.raises(ValueError, match="K must have shape"):
        project_points(torch.zeros(1, 5, 3), K[0], R, t)
    with pytest.raises(ValueError, match="cam must have shape"):
        weak_perspective_project(torch.zeros(1, 5, 3), torch.zeros(1, 2))


def test_projected_vertex_lands_in_the_pixel_pytorch3d_rasterises():
    "Small triangles around projected points: the pixel containing the projection must show that triangle."
    from pytorch3d.structures import Meshes
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
    g = torch.Generator().manual_seed(2)
    H, W = 96, 128
    K, R, t = rand_cam(2, g)
    K = K.clone(); K[:, 0, 2] = W / 2 + 3.3; K[:, 1, 2] = H / 2 - 2.1
    gy, gx = torch.meshgrid(torch.arange(3.) - 1, torch.arange(4.) - 1.5, indexing="ij")
    centres = torch.stack([gx.flatten() * 0.03, gy.flatten() * 0.03, torch.zeros(12)], -1) + torch.randn(12, 3, generator=g) * 0.005
    # small camera-facing triangles (~5 px) centred on each point: the pixel holding the projected
    # centroid must show that triangle (its centre lies within 0.71 px of the projection; inradius ~1.5 px)
    d = 0.004
    tri = torch.tensor([[-d, -d, 0.], [d, -d, 0.], [0., d, 0.]])
    tri = tri - tri.mean(0)
    for b in range(2):
        verts = (centres[:, None] + tri[None] @ R[b]).reshape(-1, 3)   # triangles parallel to the image plane
        faces = torch.arange(verts.shape[0]).reshape(-1, 3)
        cams = to_pytorch3d_cameras(K[b:b + 1], R[b:b + 1], t[b:b + 1], (H, W))
        rast = MeshRasterizer(cameras=cams, raster_settings=RasterizationSettings(image_size=(H, W), blur_radius=0.0, faces_per_pixel=1, cull_backfaces=False))
        frag = rast(Meshes([verts], [faces]))
        uv, _ = project_points(centres[None], K[b:b + 1], R[b:b + 1], t[b:b + 1])
        hits = 0
        for i in range(12):
            u, v = uv[0, i]
            col, row = int(u.floor()), int(v.floor())
            if not (0 <= col < W and 0 <= row < H): continue
            assert frag.pix_to_face[0, row, col, 0].item() == i, (b, i, u.item(), v.item())
            hits += 1
        assert hits >= 8


def test_pixel_centre_convention_matches_pytorch3d_exactly():
    "Pixel (i, j) is covered iff its centre (j+0.5, i+0.5) lies inside the projected triangle (edge-exact to 1e-3 px)."
    from pytorch3d.structures import Meshes
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
    H, W = 60, 80
    K = intrinsics(500., (H, W)); K[:, 0, 2] += 0.37; K[:, 1, 2] -= 0.21
    R, t = look_at(torch.tensor([[0.1, -0.05, 1.0]]), torch.zeros(1, 3))
    X = torch.tensor([[[-0.03, -0.02, 0.0], [0.035, -0.025, 0.01], [0.0, 0.03, -0.01]]])
    uv, _ = project_points(X, K, R, t)
    frag = MeshRasterizer(cameras=to_pytorch3d_cameras(K, R, t, (H, W)),
                          raster_settings=RasterizationSettings(image_size=(H, W), faces_per_pixel=1))(Meshes([X[0]], [torch.tensor([[0, 1, 2]])]))
    ras = frag.pix_to_face[0, ..., 0] >= 0
    jj, ii = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    p = torch.stack([jj, ii], -1)
    a, b, c = uv[0]
    def edge(p0, p1): return (p1[0] - p0[0]) * (p[..., 1] - p0[1]) - (p1[1] - p0[1]) * (p[..., 0] - p0[0])
    e = torch.stack([edge(a, b), edge(b, c), edge(c, a)])
    inside = (e > 0).all(0) | (e < 0).all(0)
    # distance of each pixel centre to the nearest edge line, to ignore ties
    lens = torch.stack([(b - a).norm(), (c - b).norm(), (a - c).norm()])[:, None, None]
    ambiguous = ((e.abs() / lens) < 1e-3).any(0)
    assert inside.sum() > 100
    assert ((ras != inside) & ~ambiguous).sum() == 0
