"TEMPEH's model: projection against the renderer, view fusion, the spatial transformer, the refinement, gradients, bad inputs."
import math
import pytest
import torch
from headbook.data.rig import synthetic_frames, synthetic_rig, Rig
from headbook.geometry.volumes import voxel_centres, grid_offsets, sample_view_features, fuse_views
from headbook.geometry.mesh import vertex_normals
from headbook.geometry.rotations import axis_angle_to_matrix
from headbook.render.mesh import render_mesh
from headbook.geometry.volumes import gaussian_log_prior
from headbook.tempeh.model import (TempehModelConfig, build_tempeh, SpatialTransformer3d, transform_grid,
                                   sample_views, place_template)
from headbook.tempeh.train import random_rotations
from headbook.tempeh.train import tempeh_config, train_tempeh, TempehData, TempehStep, _SMOKE_MODEL


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames(("synthhead",), n_subjects=2, n_frames=1, n_views=4, image_size=(48, 64), n_scan=300)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_tempeh(TempehModelConfig(**_SMOKE_MODEL)).eval()


def test_a_voxel_centre_projects_where_the_renderer_draws_it():
    "A tiny triangle centred on a voxel centre is drawn around the pixel the sampler reads for that voxel."
    rig = synthetic_rig(4, (60, 80))
    X = voxel_centres(torch.tensor([0.03, -0.02, 0.05]), 4, 0.02).reshape(-1, 3)[[0, 21, 42, 63]]
    for c in range(rig.n_views):
        for x in X:
            R, f = rig.R[c], float(rig.K[c, 0, 0])
            z = float((R @ x + rig.t[c])[2])
            r = 2.5 * z / f                                   # a triangle of about 2.5 pixels' radius
            ang = torch.tensor([0.0, 2.0, 4.0]) * math.pi / 3
            tri = x + r * (ang.cos()[:, None] * R[0] + ang.sin()[:, None] * R[1])
            faces = torch.tensor([[0, 1, 2], [0, 2, 1]])    # both windings: no culling question
            m = render_mesh(tri[None], faces, rig.K[c:c + 1], rig.R[c:c + 1], rig.t[c:c + 1], (60, 80)).mask[0, 0]
            ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
            assert len(xs) >= 5
            drawn = torch.stack([xs.float().mean() + 0.5, ys.float().mean() + 0.5])
            uv, _ = rig.project(x[None])
            assert (uv[c, 0] - drawn).abs().max() < 0.6, (uv[c, 0], drawn)
            val, ok = sample_view_features(m[None, None, None], uv[c:c + 1, None])
            assert ok.all() and val.item() > 0.99                         # the sampler reads the drawn pixel
    # and a whole head: its rendered depth, read at its own vertices' projections, is their depth
    fr = synthetic_frames(("synthhead",), n_subjects=1, n_frames=1, n_views=2, image_size=(60, 80), n_scan=100)[0]
    r = render_mesh(fr.vertices[None].expand(2, -1, -1), fr.faces, fr.rig.K, fr.rig.R, fr.rig.t, (60, 80))
    uv, z = fr.rig.project(fr.vertices)
    d, ok = sample_view_features(r.depth[None], uv[None], z[None])
    inner = ok[0] & r.visibility
    err = (d[0, ..., 0] - z)[inner].abs()
    assert err.median() < 2e-3                              # bilinear reads of the depth at visible vertices


def test_fusion_is_invariant_to_view_order_and_ignores_a_dropped_view(frames, model):
    fr = frames[0]
    perm = [2, 0, 3, 1]
    with torch.no_grad():
        a = model(fr.images[None], [fr.rig], refine=False).coarse.vertices
        b = model(fr.images[None, perm], [fr.rig.subset(perm)], refine=False).coarse.vertices
    assert (a - b).abs().max() < 1e-5
    # per point: a view with weight 0 is the same as no view at all; views with weight are not
    maps = torch.rand(1, 4, 8, 24, 32)
    X = voxel_centres(torch.zeros(1, 3), 4, 0.05).reshape(1, -1, 3)
    rig = fr.rig.scaled(2)
    f, ok = sample_views(maps, [rig], X)
    drop = ok.clone(); drop[:, 1] = False
    f3, ok3 = sample_views(maps[:, [0, 2, 3]], [rig.subset([0, 2, 3])], X)
    assert torch.allclose(fuse_views(f, drop), fuse_views(f3, ok3), atol=1e-6)
    assert not torch.allclose(fuse_views(f, ok), fuse_views(f3, ok3), atol=1e-3)


def _head_render(V, faces, rig, H=48, W=64):
    C = rig.n_views
    return render_mesh(V[None].expand(C, -1, -1), faces, rig.K, rig.R, rig.t, (H, W)).mask   # [C, 1, H, W]


def test_the_transformed_grid_resamples_a_moved_head_as_the_original():
    "Analytic: the grid of the spatial transformer's (R, tau) sees a moved head as the identity grid sees the original."
    rig = synthetic_rig(6, (96, 128), field=0.6)
    fr = synthetic_frames(("synthhead",), n_subjects=1, n_frames=1, rig=rig, n_scan=100, volume=(0.0, 0.0, 0.0))[0]
    faces = fr.faces
    V0 = fr.vertices - (fr.vertices.min(0).values + fr.vertices.max(0).values) / 2   # centred in the volume
    p = torch.tensor([0.05, -0.03, 0.04])
    D, sp, s = 12, 0.05, 0.45                                    # global grid; the head grid is 0.45 of it
    off, half, o = grid_offsets(D, sp), (D - 1) / 2 * sp, torch.zeros(3)
    S = torch.eye(3) * s
    T = lambda R, tau: torch.cat([R @ S, tau[:, None]], 1)[None]
    def vol(V, Tm):
        X = transform_grid(off, Tm, o, half)
        f, ok = sample_views(_head_render(V, faces, rig, 96, 128)[None], [rig], X.reshape(1, -1, 3))
        return fuse_views(f, ok)[0, :, 0]
    ref = vol(V0, T(torch.eye(3), torch.zeros(3)))
    good = vol(V0 + p, T(torch.eye(3), p / half))                # the translation the transformer should output
    wrong = vol(V0 + p, T(torch.eye(3), -p / half))
    assert ref.std() > 0.2                                       # the head fills part of the grid
    e_good, e_wrong = (good - ref).abs().mean(), (wrong - ref).abs().mean()
    assert e_good < 0.05 and e_wrong > 4 * e_good, (e_good, e_wrong)
    # rotation: the grid of (R, tau) is the identity grid moved by the same rigid motion, in a turned global grid too
    Rm = axis_angle_to_matrix(torch.tensor([0.1, 0.4, -0.2])); Rg = axis_angle_to_matrix(torch.tensor([0.5, -0.3, 0.9]))
    X0 = transform_grid(off, T(torch.eye(3), torch.zeros(3)), o, half)
    X1 = transform_grid(off, T(Rm, p / half), o, half)
    assert torch.allclose(X1, X0 @ Rm.T + p, atol=1e-6)
    X2 = transform_grid(off, T(Rm, p / half), o, half, Rg[None])
    assert torch.allclose(X2, (X0 @ Rm.T + p) @ Rg.T, atol=1e-6)   # the motion happens in the turned grid's frame


def _mask_volumes(D: int = 16, sp: float = 0.04):
    "20 synthetic frames' fused silhouette volumes [20, 2, D, D, D], their heads' centres, and the grid."
    frs = synthetic_frames(("synthhead",), n_subjects=10, n_frames=2, n_views=4, image_size=(48, 64), n_scan=100)
    off, o, half = grid_offsets(D, sp), torch.zeros(3), (D - 1) / 2 * sp
    vols, cs = [], []
    for fr in frs:
        f, ok = sample_views(fr.params["mask"][None].float(), [fr.rig], off.reshape(1, -1, 3))
        vols.append(fuse_views(f, ok)[0].T.reshape(2, D, D, D))
        cs.append((fr.vertices.min(0).values + fr.vertices.max(0).values) / 2)
    return torch.stack(vols), torch.stack(cs), (off, o, half)


def test_the_spatial_transformer_learns_to_find_the_head():
    "A short training of the transformer alone: held-out heads' positions found far better than by their mean."
    D = 16
    vols, cs, (off, o, half) = _mask_volumes(D)
    torch.manual_seed(0)
    st = SpatialTransformer3d(2, D, hidden=8, levels=2, norm="gn")
    opt = torch.optim.Adam(st.parameters(), 1e-3)
    centre = lambda v: transform_grid(off, st(v)[0], o, half).mean((1, 2, 3))
    for _ in range(150):
        loss = (centre(vols[:15]) - cs[:15]).square().sum(-1).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): err = (centre(vols[15:]) - cs[15:]).norm(dim=-1).mean()
    base = (cs[15:] - cs[:15].mean(0)).norm(dim=-1).mean()
    assert err < 0.5 * base, (err, base)


def test_the_locating_transformer_finds_the_head_from_few_steps():
    "The translation as a soft-argmax over the grid (st_locate): 30 steps on 15 frames find held-out heads."
    D = 16
    vols, cs, (off, o, half) = _mask_volumes(D)
    torch.manual_seed(0)
    st = SpatialTransformer3d(2, D, hidden=8, levels=2, norm="gn", locate=True)
    T0, _ = st(vols[:2])
    assert T0[:, :, 3].abs().max() < 5e-3                        # starts (nearly) centred, as the regression does
    opt = torch.optim.Adam(st.parameters(), 1e-3)
    centre = lambda v: transform_grid(off, st(v)[0], o, half).mean((1, 2, 3))
    for _ in range(30):
        loss = (centre(vols[:15]) - cs[:15]).square().sum(-1).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): err = (centre(vols[15:]) - cs[15:]).norm(dim=-1).mean()
    base = (cs[15:] - cs[:15].mean(0)).norm(dim=-1).mean()
    assert err < 0.5 * base, (err, base)


def test_the_anchored_coarse_stage_starts_at_the_template_whatever_the_grid_rotation(frames):
    "template_prior: the untrained stage outputs the template at the centre, not turned by the random grid rotation."
    torch.manual_seed(0)
    m = build_tempeh(TempehModelConfig(**_SMOKE_MODEL)).eval()
    assert m.cfg.template_prior > 0 and m.cfg.st_locate                    # the smoke preset uses both
    t = m.template
    want = t - (t.min(0).values + t.max(0).values) / 2 + torch.tensor(m.cfg.global_centre)
    Rg = random_rotations(1, torch.Generator().manual_seed(3))
    for rot in (None, Rg):
        with torch.no_grad(): co = m.coarse(frames[0].images[None], [frames[0].rig], rot)
        assert (co.placed[0] - want).abs().max() < 2e-3
        assert (co.vertices[0] - want).norm(dim=-1).median() < 2e-3
    # the placement is a rigid motion: the transformer's rotation happens in the grid's frame, its translation too
    a = want - want.mean(0)
    Rm = axis_angle_to_matrix(torch.tensor([0.2, -0.5, 0.1]))
    s = torch.tensor([[0.3, 0.2, 0.25]])
    T = torch.cat([s[0, :, None] * Rm, torch.tensor([[0.1], [-0.2], [0.3]])], 1)[None]
    p = place_template(a, T, s, torch.tensor([0.0, 0.1, 0.0]), 0.5, Rg)
    want = a @ (Rg[0] @ Rm @ Rg[0].T).T + Rg[0] @ torch.tensor([0.05, -0.1, 0.15]) + torch.tensor([0.0, 0.1, 0.0])
    assert torch.allclose(p[0], want, atol=1e-6)
    dist = lambda x: (x[::7, None] - x[None, ::7]).norm(dim=-1)
    assert torch.allclose(dist(p[0]), dist(a), atol=1e-6)             # rigid: not scaled by the grid's scales
    with pytest.raises(ValueError, match="sigma must be positive"): gaussian_log_prior(torch.zeros(1, 2, 2, 2, 3),
                                                                                       torch.zeros(1, 1, 3), 0.0)
    with pytest.raises(ValueError, match="needs the template"):
        from headbook.tempeh.model import CoarseStage
        CoarseStage(m.cfg, 10)


def test_the_refinement_lowers_the_error_of_an_inflated_coarse_mesh():
    "40 steps of the refinement alone on 3 frames: a mesh pushed 8 mm out along its normals comes back on a 4th."
    rig = synthetic_rig(4, (96, 128), field=0.4, azimuth=50)
    frs = synthetic_frames(("synthhead",), n_subjects=2, n_frames=2, rig=rig, n_scan=100, volume=(0.02, 0.02, 0.02))
    torch.manual_seed(0)
    m = build_tempeh(TempehModelConfig(**{**_SMOKE_MODEL, "local_dim": 4, "local_spacing": 0.006,
                                          "refine_downsample": 1}))
    ref, g = m.refine, torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(ref.parameters(), 3e-3)
    def run(fr, K=128):
        v = fr.vertices[None]
        c = v + 0.008 * vertex_normals(v, m.faces)
        ids = torch.randperm(v.shape[1], generator=g)[:K]
        out = ref(fr.images[None], [fr.rig], c, m.faces, m.template, ids)
        return out[0, ids], c[0, ids], fr.vertices[ids]
    for it in range(40):
        out, _, gt = run(frs[it % 3])
        loss = ((out - gt) * 1000).square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
    ref.eval()
    with torch.no_grad(): out, c, gt = run(frs[3], 512)
    before, after = (c - gt).norm(dim=-1).mean(), (out - gt).norm(dim=-1).mean()
    assert after < 0.8 * before, (before, after)


def test_gradients_reach_every_part_of_both_stages(frames):
    cfg = tempeh_config("smoke")
    data = TempehData(cfg.data)
    torch.manual_seed(0)
    m = build_tempeh(cfg.model, data.head)
    b = data.batch(torch.tensor([0, 1]), 0, augment=True)
    TempehStep(m, cfg, data.head)(b, 5)["loss"].backward()     # fine-tuning phase: v2v, s2m, edge
    for name in ("features", "transformer", "v2v"):
        gs = [p.grad for p in getattr(m.coarse, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in gs) and sum(g.abs().sum() for g in gs) > 0, name
    assert all(p.grad is None for p in m.refine.parameters())
    rcfg = tempeh_config("smoke", {"stage": "refine"})
    m.zero_grad(set_to_none=True)
    TempehStep(m, rcfg, data.head)(b, 0)["loss"].backward()
    for name in ("features", "v2v"):
        gs = [p.grad for p in getattr(m.refine, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in gs) and sum(g.abs().sum() for g in gs) > 0, name
    assert all(p.grad is None for p in m.coarse.parameters())     # the coarse stage is frozen in the refinement


def test_bad_inputs_give_clear_errors(frames, model):
    fr = frames[0]
    imgs = fr.images[None]
    with pytest.raises(ValueError, match="at least two views"): fr.rig.subset([0])
    bad = fr.rig.subset([0, 1, 2, 3]); bad.K = bad.K.clone(); bad.K[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="view '00_B': K is not finite"): model(imgs, [bad])
    with pytest.raises(ValueError, match=r"is for 80x60 images, but its image of frame 0 is 64x48"):
        model(imgs, [synthetic_rig(4, (60, 80))])
    with pytest.raises(ValueError, match="hold 3 views, but the rig has 4"): model(imgs[:, :3], [fr.rig])
    with pytest.raises(ValueError, match="images must have shape"): model(imgs, [fr.rig, fr.rig])
    with pytest.raises(ValueError, match="NaN or inf"): model(imgs * float("nan"), [fr.rig])
    with pytest.raises(TypeError, match="data.rig.Rig"): model(imgs, [fr.rig.K])
    with pytest.raises(ValueError, match="cannot be downsampled by 2"):
        model(imgs[..., :47, :], [Rig(fr.rig.names, fr.rig.K, fr.rig.dist, fr.rig.R, fr.rig.t, [[47, 64]] * 4)])
    with pytest.raises(ValueError, match="stage must be"): tempeh_config("smoke", {"stage": "both"})
    with pytest.raises(ValueError, match="needs coarse_run"): train_tempeh(tempeh_config("smoke", {"stage": "refine"}))


def test_refinement_patch_is_a_neighbourhood_with_its_own_edges():
    "On a CPU the refinement trains on a patch: the k template vertices nearest a random one, and the edges inside."
    cfg = tempeh_config("smoke", {"stage": "refine"})
    from headbook.models.registry import load_head_model
    head = load_head_model(cfg.model.head_model)
    m = build_tempeh(cfg.model, head)
    st = TempehStep(m, cfg, head)
    ids, edges = st.patch(64, 3)
    assert torch.equal(ids, st.patch(64, 3)[0]) and not torch.equal(ids, st.patch(64, 4)[0])   # seeded by the step
    assert len(ids) == 64 and (ids.diff() > 0).all()
    inside = torch.zeros(len(m.template), dtype=torch.bool); inside[ids] = True
    assert inside[edges].all() and len(edges) > len(ids)                # only the patch's own edges, and most of them
    t = m.template
    radius = lambda c: ((t[ids] - c).norm(dim=-1).max(), (t[~inside] - c).norm(dim=-1).min())
    assert any(r_in <= r_out for r_in, r_out in (radius(t[i]) for i in ids))   # a ball around one of its vertices


def test_refinement_patch_scans_are_the_points_nearest_the_patch():
    "The scan term of a patch uses the scan points whose nearest coarse vertex is in it (at least min_points)."
    g = torch.Generator().manual_seed(0)
    verts = torch.rand(1, 50, 3, generator=g)
    scan = verts[0, torch.randint(50, (400,), generator=g)] + 1e-3 * torch.randn(400, 3, generator=g)
    ids = torch.arange(10)
    kept = TempehStep.patch_scans([scan], verts, ids)[0]
    nearest = torch.cdist(kept, verts[0]).argmin(1)
    assert len(kept) > 16 and (nearest < 10).all()
    assert (torch.cdist(scan, verts[0]).argmin(1) < 10).sum() == len(kept)       # all of them
    few = TempehStep.patch_scans([scan[:3], scan], torch.cat([verts, verts]), ids, min_points=4)
    assert len(few[0]) == 3 and len(few[1]) == len(kept)      # fewer than min_points: the nearest ones, all 3 here
