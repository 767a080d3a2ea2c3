"implicit.fields: the initial sphere, the batched ensemble against its loop twin, and a short SDF fit to a mesh."
import math
import pytest, torch
from headbook.implicit.fields import (SDFNetwork, MLPEnsemble, blend_ensemble, positional_encoding,
                                      sdf_and_gradient, eikonal_loss)


def shell(n, r0, r1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x / x.norm(dim=-1, keepdim=True) * (r0 + (r1 - r0) * torch.rand(n, 1, generator=g))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("radius,scale", [(0.5, 1.0), (0.48, 4.0)])
def test_geometric_init_is_a_sphere(seed, radius, scale):
    net = SDFNetwork(radius=radius, input_scale=scale, seed=seed)       # IDR's sizes: 8 x 256, skip at 4, 6 octaves
    r = radius / scale
    x = shell(3000, 0.8 * r, 1.2 * r, seed)
    with torch.no_grad(): err = (net(x)[:, 0] - (x.norm(dim=-1) - r)).abs()
    assert err.max() < 0.015 * r, float(err.max() / r)                  # measured: ~0.011 r worst over these seeds
    _, g, _ = sdf_and_gradient(net, x, create_graph=False)
    assert (g.norm(dim=-1) - 1).abs().mean() < 0.05


def test_sal_init_is_lumpier_than_the_sphere_init():
    x = shell(3000, 0.4, 0.6)
    with torch.no_grad():
        e_sal = (SDFNetwork(init="sal")(x)[:, 0] - (x.norm(dim=-1) - 0.5)).abs().max()
        e_sph = (SDFNetwork(init="sphere")(x)[:, 0] - (x.norm(dim=-1) - 0.5)).abs().max()
    assert e_sph < 0.01 and e_sal > 5 * e_sph


def test_inside_out_flips_the_sign():
    x = shell(200, 0.2, 0.8)
    with torch.no_grad():
        a = SDFNetwork(width=64, n_layers=4, skips=(2,), weight_norm=False)(x)[:, 0]
        b = SDFNetwork(width=64, n_layers=4, skips=(2,), weight_norm=False, inside_out=True)(x)[:, 0]
    assert torch.allclose(a, -b, atol=1e-5)


def test_weight_norm_does_not_change_the_initial_function():
    x = shell(300, 0.1, 0.9)
    with torch.no_grad():
        assert torch.allclose(SDFNetwork(weight_norm=True)(x), SDFNetwork(weight_norm=False)(x), atol=1e-5)


def test_positional_encoding_layout():
    x = torch.tensor([[0.3, -0.2, 0.1]])
    e = positional_encoding(x, 3)
    assert e.shape == (1, 21)
    assert torch.allclose(e[0, 15:18], torch.sin(4 * x[0])) and torch.allclose(e[0, 18:21], torch.cos(4 * x[0]))


@pytest.mark.parametrize("skips,n_freqs", [((), 0), ((2,), 3)])
def test_batched_ensemble_equals_loop_outputs_and_gradients(skips, n_freqs):
    torch.manual_seed(0)
    ens = MLPEnsemble(n_members=7, d_in=3, d_out=4, width=32, n_layers=4, skips=skips, n_freqs=n_freqs).double()
    x = torch.randn(7, 50, 3, dtype=torch.float64, requires_grad=True)
    cot = torch.randn(7, 50, 4, dtype=torch.float64)
    a = ens(x); ga = torch.autograd.grad((a * cot).sum(), [x, *ens.parameters()])
    b = ens.forward_loop(x); gb = torch.autograd.grad((b * cot).sum(), [x, *ens.parameters()])
    assert (a - b).abs().max() < 1e-12
    for u, v in zip(ga, gb): assert (u - v).abs().max() < 1e-11
    # float32 as well
    e32 = ens.float(); x32 = x.detach().float()
    assert (e32(x32) - e32.forward_loop(x32)).abs().max() < 1e-5


def test_blend_ensemble_sparse_equals_dense_and_a_direct_formula():
    torch.manual_seed(0)
    ens = MLPEnsemble(n_members=6, d_out=2, width=16, n_layers=3)
    c = torch.randn(6, 3) * 0.3; x = torch.randn(400, 3) * 0.3; sigma = 0.08
    dense = blend_ensemble(ens, x, c, sigma)
    # direct: every member on every point, weighted
    out = ens((x[None] - c[:, None]))                                   # [M, N, 2]
    w = torch.softmax(-((x[:, None] - c[None]) ** 2).sum(-1) / (2 * sigma ** 2), 1)   # [N, M]
    ref = (out.permute(1, 0, 2) * w[..., None]).sum(1)
    assert (dense - ref).abs().max() < 1e-5
    sparse = blend_ensemble(ens, x, c, sigma, cutoff=1e-4)
    assert (sparse - dense).abs().max() < 1e-3 * out.abs().max()


def test_fit_small_mlp_to_synthhead_samples():
    from headbook.models import load_head_model
    from headbook.implicit.sampling import MeshSDFSampler, sdf_supervision_loss
    head = load_head_model("synthhead"); hv, hf = head().vertices.detach()[0], head.faces.long()
    batches = [MeshSDFSampler(hv, hf, 512, 512, 256, seed=s).sample() for s in range(4)]
    test = MeshSDFSampler(hv, hf, 2000, 1000, 500, seed=99).sample()
    torch.manual_seed(0)
    net = SDFNetwork(width=64, n_layers=4, skips=(2,), n_freqs=4, radius=0.45, input_scale=4.0, weight_norm=False)

    def surface_err_and_grad_norm():
        f, g, _ = sdf_and_gradient(net, test.surface, create_graph=False)
        _, g2, _ = sdf_and_gradient(net, torch.cat([test.near, test.far]), create_graph=False)
        gn = torch.cat([g, g2]).norm(dim=-1)
        return float(f.detach().abs().mean()), float(gn.mean()), float(eikonal_loss(torch.cat([g, g2])))

    s0, _, _ = surface_err_and_grad_norm()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for step in range(300):
        L = sdf_supervision_loss(net, batches[step % 4]); opt.zero_grad(); L["total"].backward(); opt.step()
    s1, gmean, eik = surface_err_and_grad_norm()
    # measured: surface |SDF| 22 mm -> ~3 mm; mean |grad| ~0.95, eikonal term ~0.013
    assert s0 > 0.015 and s1 < 0.005 and s1 < 0.25 * s0, (s0, s1)
    assert abs(gmean - 1) < 0.1 and eik < 0.03, (gmean, eik)


def test_bad_inputs_name_the_argument():
    net = SDFNetwork(width=32, n_layers=3, skips=())
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 3\]"): net(torch.zeros(4, 2))
    ens = MLPEnsemble(3)
    with pytest.raises(ValueError, match=r"x must have shape \[3, \*, 3\]"): ens(torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"centres must have shape \[3, 3\]"):
        blend_ensemble(ens, torch.zeros(5, 3), torch.zeros(4, 3), 0.1)
    with pytest.raises(ValueError, match="init must be"): SDFNetwork(init="xavier")


def test_blend_ensemble_gradients_flow_through_the_sparse_path():
    torch.manual_seed(0)
    ens = MLPEnsemble(n_members=5, d_out=1, width=16, n_layers=3).double()
    c = torch.randn(5, 3, dtype=torch.float64) * 0.3
    x = torch.randn(50, 3, dtype=torch.float64) * 0.3
    f = lambda cut: (lambda p: blend_ensemble(ens, p, c, 0.1, cutoff=cut)[:, 0])
    _, g_dense, _ = sdf_and_gradient(f(0.0), x)
    _, g_sparse, _ = sdf_and_gradient(f(1e-12), x)
    assert (g_dense - g_sparse).abs().max() < 1e-8
    eikonal_loss(g_sparse).backward()                                            # second order reaches the weights
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ens.parameters())


def _member_mlp(ens, m, inp):  # one member on [P, d_in], written out layer by layer
    h = inp
    for l, (W, b) in enumerate(zip(ens.weights, ens.biases)):
        if l in ens.skips: h = torch.cat([h, inp], -1)
        h = h @ W[m] + b[m, 0]
        if l < len(ens.weights) - 1: h = torch.nn.functional.softplus(h, beta=100)
    return h


def test_blend_with_codes_shared_members_mirrors_and_background_equals_a_direct_loop():
    torch.manual_seed(3)
    B, K, F, N = 2, 5, 4, 40
    ens = MLPEnsemble(n_members=4, d_in=3 + F, d_out=1, width=16, n_layers=3, skips=(1,))
    member = torch.tensor([0, 0, 1, 2, 3]); mirror = torch.tensor([False, True, False, False, False])
    C = torch.randn(B, K, 3) * 0.3; C[:, -1] = 0
    Fe = torch.randn(B, K, F)
    x = torch.randn(N, 3) * 0.3; batch = torch.arange(N) % B
    sigma, bg = 0.2, -8.0
    got = blend_ensemble(ens, x, C, sigma, batch=batch, features=Fe, member=member, mirror=mirror,
                         background_logit=bg)
    want = torch.zeros(N, 1)
    for n in range(N):
        b = batch[n]
        logw = torch.stack([-((x[n] - C[b, k]) ** 2).sum() / (2 * sigma ** 2) if k < K - 1 else torch.tensor(bg)
                            for k in range(K)])
        w = torch.softmax(logw, 0)
        for k in range(K):
            loc = x[n] - C[b, k]
            if mirror[k]: loc = loc * torch.tensor([-1.0, 1.0, 1.0])
            want[n] += w[k] * _member_mlp(ens, member[k], torch.cat([loc, Fe[b, k]])[None])[0]
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    # the background member's output can be pinned (NPHM: "always outside" at evaluation)
    pinned = blend_ensemble(ens, x, C, sigma, batch=batch, features=Fe, member=member, mirror=mirror,
                            background_logit=bg, background_value=1.0)
    assert not torch.allclose(pinned, got)
    with pytest.raises(ValueError, match="give `batch`"): blend_ensemble(ens, x, C, sigma, features=Fe, member=member)
    with pytest.raises(ValueError, match="member indices"):
        blend_ensemble(ens, x, C, sigma, batch=batch, features=Fe, member=member + 1)
    with pytest.raises(ValueError, match="takes 7 inputs"): blend_ensemble(ens, x, C, sigma, batch=batch, member=member)


def test_sdf_network_code_starts_ignored_and_is_checked():
    net = SDFNetwork(d_cond=8, width=32, n_layers=4, skips=(2,), n_freqs=2, radius=0.5)
    x = torch.randn(50, 3) * 0.3
    a, b = net(x, torch.randn(8))[:, 0], net(x, torch.zeros(50, 8))[:, 0]
    assert torch.equal(a, b)                                   # zero-initialised code columns
    assert (a - (x.norm(dim=-1) - 0.5)).abs().max() < 0.05     # still the initial sphere
    with pytest.raises(ValueError, match="cond"): net(x)
    with pytest.raises(ValueError, match="cond must have shape"): net(x, torch.zeros(50, 7))
