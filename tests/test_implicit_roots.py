"implicit.roots: Broyden inverts LBS on synthhead, flags what has no root; IFT gradients match finite differences."
import pytest, torch
from headbook.implicit.roots import broyden, find_roots, batch_jacobian
from headbook.models.lbs import rigid_transforms, vertices_to_joints
from headbook.geometry.rotations import axis_angle_to_matrix


def skinning_problem(dtype=torch.float32, n_anchor=800, sigma=0.01):
    "Forward LBS of canonical points with a smooth (Gaussian-kernel) weight field built on synthhead's weights."
    from headbook.models import load_head_model
    head = load_head_model("synthhead")
    vt = head.v_template.to(dtype)
    anchors = torch.randperm(vt.shape[0], generator=torch.Generator().manual_seed(0))[:n_anchor]
    av, aw = vt[anchors], head.weights.to(dtype)[anchors]
    J0 = vertices_to_joints(head.J_regressor.to(dtype), vt[None])
    pose = torch.zeros(1, 5, 3, dtype=dtype)
    pose[0, 1, 1] = 0.3; pose[0, 2, 0] = 0.25                                     # neck turn, jaw open
    pose.requires_grad_(True)

    def transforms(p): return rigid_transforms(axis_angle_to_matrix(p), J0, head.parents)[1][0]   # [5, 4, 4]

    def fn(x, qi, p=None):
        A = transforms(pose if p is None else p)
        w = torch.softmax(-torch.cdist(x, av) ** 2 / (2 * sigma ** 2), dim=1) @ aw
        T = torch.einsum("pk,kij->pij", w, A)
        return (T[:, :3, :3] @ x[..., None])[..., 0] + T[:, :3, 3]
    return vt, fn, pose, transforms


def bone_starts(xd, A):
    Ainv = torch.linalg.inv(A)
    return (Ainv[None, :, :3, :3] @ xd[:, None, :, None])[..., 0] + Ainv[None, :, :3, 3]


def test_broyden_inverts_lbs_on_synthhead():
    vt, fn, pose, transforms = skinning_problem()
    g = torch.Generator().manual_seed(1)
    xc = vt[torch.randperm(vt.shape[0], generator=g)[:400]] + 0.002 * torch.randn(400, 3, generator=g)
    with torch.no_grad(): xd = fn(xc, None); starts = bone_starts(xd, transforms(pose))
    # tol 1e-7: the Jacobian's smallest singular value at the truth goes down to 0.04 near the jaw, so a residual
    # of 1e-6 can leave the point 1.3e-5 away; float32 reaches 1e-7 on every query (about 2 iterations on average)
    root = find_roots(fn, xd, starts, max_iter=50, tol=1e-7, max_step=0.02)
    assert root.converged.all()
    found = (((root.all.x - xc[:, None]).norm(dim=-1) < 1e-5) & root.all.converged).any(1)
    assert found.all()                                                            # the truth is among the roots
    chosen = (root.x - xc).norm(dim=-1) < 1e-5
    assert chosen.float().mean() > 0.98                                           # measured: 399/400 or 400/400
    # every chosen root is a root, even the ones that are not the truth (the deformation is not one-to-one)
    assert (root.residual < 1e-7).all()


def test_broyden_flags_queries_without_roots_and_caps_iterations():
    tanh = lambda x, qi: torch.tanh(x)
    y = torch.tensor([[0.5, -0.3, 0.2], [1.5, 0.0, 0.0], [0.1, 0.1, -1.2], [0.9, 0.9, 0.9]])
    res = broyden(tanh, y, torch.zeros(4, 2, 3), max_iter=40)
    assert res.converged.tolist() == [[True, True], [False, False], [False, False], [True, True]]
    assert torch.isfinite(res.x).all() and (res.iterations[1] == 40).all()
    assert (torch.tanh(res.x[0, 0]) - y[0]).norm() < 1e-6
    capped = broyden(tanh, y[:1], torch.zeros(1, 1, 3), max_iter=1)
    assert not capped.converged.any() and capped.iterations.item() == 1


def test_converged_queries_stop_being_evaluated():
    calls = []
    def f(x, qi): calls.append(len(x)); return x ** 3 + x
    y = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 3.0]])
    res = broyden(f, y, torch.tensor([[[0.0, 0.0, 0.0]], [[0.5, 0.5, 0.5]]]))
    assert res.converged.all() and res.iterations[0, 0] == 0
    assert max(calls[2:]) == 1                                                    # after the start, one row only


def test_implicit_gradients_match_finite_differences():
    vt, fn, pose, transforms = skinning_problem(torch.float64, n_anchor=300, sigma=0.015)
    g = torch.Generator().manual_seed(2)
    xc = vt[torch.randperm(vt.shape[0], generator=g)[:20]]
    with torch.no_grad(): xd0 = fn(xc, None)
    xd = xd0.clone().requires_grad_(True)
    starts = bone_starts(xd0, transforms(pose.detach()))
    root = find_roots(fn, xd, starts, params=[pose], tol=1e-12, max_iter=80)
    assert root.converged.all()
    w = torch.randn(20, 3, generator=g, dtype=torch.float64)
    (root.x * w).sum().backward()

    def solve(p, y):
        with torch.no_grad():
            r = find_roots(lambda x, qi: fn(x, qi, p), y, bone_starts(y, transforms(p)), tol=1e-13, max_iter=80)
            assert r.converged.all()
            return float((r.x * w).sum())
    h = 1e-6
    for j, k in [(2, 0), (1, 1), (1, 0)]:                                         # jaw pitch, neck yaw, neck pitch
        e = torch.zeros_like(pose); e[0, j, k] = h
        fd = (solve(pose.detach() + e, xd0) - solve(pose.detach() - e, xd0)) / (2 * h)
        assert abs(float(pose.grad[0, j, k]) - fd) < 1e-6 * max(1.0, abs(fd)), (j, k, float(pose.grad[0, j, k]), fd)
    for q, c in [(0, 0), (7, 2)]:
        e = torch.zeros_like(xd0); e[q, c] = h
        fd = (solve(pose.detach(), xd0 + e) - solve(pose.detach(), xd0 - e)) / (2 * h)
        assert abs(float(xd.grad[q, c]) - fd) < 1e-6 * max(1.0, abs(fd))


def test_batch_jacobian_against_finite_differences():
    f = lambda x, qi: torch.stack([x[:, 0] * x[:, 1], torch.sin(x[:, 2]), x[:, 0] ** 2], 1)
    x = torch.randn(5, 3, dtype=torch.float64)
    J = batch_jacobian(f, x, torch.arange(5))
    h = 1e-6
    for j in range(3):
        e = torch.zeros(1, 3, dtype=torch.float64); e[0, j] = h
        assert torch.allclose(J[:, :, j], (f(x + e, None) - f(x - e, None)) / (2 * h), atol=1e-8)


def test_bad_inputs_are_refused_before_the_solver_runs():
    calls = []
    def f(x, qi): calls.append(1); return x
    with pytest.raises(ValueError, match="target contains NaN"):
        broyden(f, torch.tensor([[float("nan"), 0.0, 0.0]]), torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="x0 contains NaN"):
        find_roots(f, torch.zeros(1, 3), torch.full((1, 2, 3), float("nan")))
    with pytest.raises(ValueError, match=r"x0 must have shape \[2, \*, 3\]"):
        broyden(f, torch.zeros(2, 3), torch.zeros(3, 1, 3))
    with pytest.raises(ValueError, match=r"target must have shape \[\*, \*\]"):
        broyden(f, torch.zeros(3), torch.zeros(3, 1, 3))
    assert calls == []
