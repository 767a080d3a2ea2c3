"implicit.sampling: signed distances against exact distances and inside/outside tests; open meshes; the stream."
import itertools
import numpy as np, pytest, torch, trimesh
from headbook.eval.distance import closest_points_brute_force
from headbook.implicit.sampling import (winding_number, winding_number_exact, signed_distance, MeshSDFSampler,
                                        sdf_stream, head_model_meshes)
from conftest import SHARED


@pytest.fixture(scope="module")
def synthhead():
    from headbook.models import load_head_model
    head = load_head_model("synthhead")
    return head().vertices.detach()[0], head.faces.long()


def test_sampler_distances_match_exact_distances_and_watertight_sign(synthhead):
    hv, hf = synthhead
    assert trimesh.Trimesh(hv.numpy(), hf.numpy(), process=False).is_watertight
    s = MeshSDFSampler(hv, hf, n_surface=50, n_near=200, n_far=100, seed=3).sample()
    P = torch.cat([s.near, s.far]); d = torch.cat([s.near_sdf, s.far_sdf])
    bf = closest_points_brute_force(P.double().numpy(), hv.double().numpy(), hf.numpy())
    assert np.abs(np.abs(d.double().numpy()) - bf.distances).max() < 1e-6          # magnitude: exact
    inside = trimesh.Trimesh(hv.numpy(), hf.numpy(), process=False).contains(P.numpy())
    assert ((d < 0).numpy() == inside).all()                                       # sign: ray parity agrees
    assert 0.2 < inside[:200].mean() < 0.8                                         # near points on both sides


def test_fast_winding_number_matches_the_exact_sum(synthhead):
    hv, hf = synthhead
    g = torch.Generator().manual_seed(0)
    q = hv.min(0).values - 0.02 + (hv.max(0).values - hv.min(0).values + 0.04) * torch.rand(400, 3, generator=g)
    we = winding_number_exact(q, hv, hf)
    assert ((we - we.round()).abs() < 1e-6).all()                                   # closed: integers
    wf = winding_number(q, hv, hf)
    assert (wf - we).abs().max() < 0.02 and torch.equal(wf > 0.5, we > 0.5)
    import igl
    wi = igl.winding_number(hv.double().numpy(), hf.numpy(), q.double().numpy())
    assert np.abs(wi - we.numpy()).max() < 1e-9                                    # libigl's exact sum = ours


def test_open_ict_head_sign_inside_skull_and_outside():
    pytest.importorskip("igl")
    from headbook.models import load_head_model
    ict = load_head_model("ict")
    v, f = ict.v_template.float(), ict.faces.long()
    assert not trimesh.Trimesh(v.numpy(), f.numpy(), process=False).is_watertight
    g = torch.Generator().manual_seed(0)
    ball = torch.randn(200, 3, generator=g)
    ball = ball / ball.norm(dim=-1, keepdim=True) * 0.02 * torch.rand(200, 1, generator=g)
    inside = torch.tensor([0.0, 0.05, 0.0]) + ball                                 # the middle of the skull
    far = torch.randn(200, 3, generator=g)
    far = far / far.norm(dim=-1, keepdim=True) * 0.35                            # a shell around the head
    sd_in, sd_out = signed_distance(inside, v, f), signed_distance(far, v, f)
    assert (sd_in.sdf < 0).all() and (sd_in.winding > 0.8).all()
    assert (sd_out.sdf > 0).all() and (sd_out.winding.abs() < 0.1).all()            # measured: |w| <= 0.05


def test_stream_over_ict_identities_and_the_scan():
    from headbook.models import load_head_model
    from headbook.geometry.mesh import load_mesh
    ict = load_head_model("ict")
    meshes = head_model_meshes(ict, n=2, shape_std=1.0, expr_std=0.5, seed=1)
    got = list(sdf_stream(meshes, batches_per_mesh=2, n_surface=50, n_near=100, n_far=50))
    assert len(got) == 4 and all(torch.isfinite(b.near_sdf).all() for b in got)
    assert not torch.equal(got[0].surface, got[2].surface)                          # different identities
    scan = SHARED / "scans" / "lee-perry-smith" / "LeePerrySmith.obj"
    if not scan.exists(): pytest.skip("Lee Perry-Smith scan not present")
    V, F = load_mesh(scan)
    b = next(iter(sdf_stream([(torch.from_numpy(V), torch.from_numpy(F))], n_surface=50, n_near=100, n_far=100)))
    centre = torch.from_numpy((V.min(0) + V.max(0)) / 2)[None]
    sd_centre = signed_distance(centre, torch.from_numpy(V), torch.from_numpy(F)).sdf[0]
    assert sd_centre < -0.02                                                       # inside the open scan (-0.023)
    assert torch.allclose(b.normals.norm(dim=-1), torch.ones(50), atol=1e-5)


def test_bad_inputs(synthhead):
    hv, hf = synthhead
    with pytest.raises(ValueError, match=r"points must have shape \[\*, 3\]"):
        signed_distance(torch.zeros(5, 2), hv, hf)
    with pytest.raises(ValueError, match="points contains NaN"):
        signed_distance(torch.tensor([[float("nan"), 0, 0]]), hv, hf)
    with pytest.raises(ValueError, match=r"verts must have shape \[\*, 3\]"): MeshSDFSampler(hv[:, :2], hf)


def test_pooled_sampler_draws_from_one_exact_store(synthhead):
    hv, hf = synthhead
    kw = dict(n_surface=40, n_near=30, n_far=20, seed=5)
    a, b = MeshSDFSampler(hv, hf, pool=4, **kw), MeshSDFSampler(hv, hf, pool=4, **kw)
    b.gen.manual_seed(99)                                  # another batch stream, the same store (it comes from seed)
    s1, s2, t = a.sample(), a.sample(), b.sample()
    near, near_sdf, far, far_sdf = a._store
    assert near.shape == (120, 3) and far.shape == (80, 3) and torch.equal(near, b._store[0])
    for s in (s1, s2):
        assert s.near.shape == (30, 3) and s.far.shape == (20, 3) and s.surface.shape == (40, 3)
        i = torch.cdist(s.near, near).argmin(1)           # every near point (and its distance) is one of the store's
        assert torch.equal(s.near, near[i]) and torch.equal(s.near_sdf, near_sdf[i])
    assert not torch.equal(s1.near, s2.near) and not torch.equal(s1.surface, s2.surface)
    exact = signed_distance(s1.far, hv, hf).sdf
    assert torch.allclose(s1.far_sdf, exact, atol=1e-6)
    fresh = MeshSDFSampler(hv, hf, **kw)                   # pool=0: nothing stored
    fresh.sample(); assert fresh._store is None
    with pytest.raises(ValueError, match="pool must be >= 0"): MeshSDFSampler(hv, hf, pool=-1)
