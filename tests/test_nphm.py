"NPHM model and training: the ensemble against a naive loop, mirrors, anchors, the expression field, Broyden, resume."
import math
import pytest
import torch
import torch.nn.functional as F
from headbook.models.registry import load_head_model
from headbook.nphm.model import NPHM, NPHMModelConfig, NPHMIdentity, head_anchors, to_nphm, from_nphm, _mirror_x
from headbook.nphm.train import (nphm_config, NPHMData, train_nphm, load_nphm, expression_losses,
                                 NPHMExprLossWeights)

TINY = dict(n_glob=6, n_loc=4, width=16, hidden_layers=2, pos_width=8, n_expr=4, n_id_compressed=4, def_width=32,
            def_hidden_layers=2)


@pytest.fixture(scope="module")
def layout():
    return head_anchors(load_head_model("synthhead"))


def _naive_identity(idm: NPHMIdentity, x, code):  # [B, N, 3], [B, D] -> [B, N]: loop over heads, points, anchors
    glob, loc = idm.split_code(code)
    A = idm.anchors(code)
    ens = idm.ensemble
    out = torch.zeros(x.shape[:2])
    for b in range(x.shape[0]):
        centres = torch.cat([A[b], torch.zeros(1, 3)])
        for n in range(x.shape[1]):
            d2 = ((x[b, n] - centres) ** 2).sum(-1)
            logit = -d2 / idm.cfg.sigma ** 2
            logit[-1] = idm.cfg.background / idm.cfg.sigma ** 2
            w = torch.softmax(logit, 0)
            for k in range(idm.K + 1):
                m = int(idm.member[k])
                local = x[b, n] - centres[k]
                if idm.mirror[k]: local = local * torch.tensor([-1.0, 1.0, 1.0])
                h = inp = torch.cat([local, glob[b], loc[b, k]])[None]
                for l, (W, bias) in enumerate(zip(ens.weights, ens.biases)):
                    if l in ens.skips: h = torch.cat([h, inp], -1)
                    h = h @ W[m] + bias[m]
                    if l < len(ens.weights) - 1: h = F.softplus(h, beta=100)
                out[b, n] += w[k] * h[0, 0]
    return out


def test_ensemble_blending_equals_a_naive_per_member_loop(layout):
    torch.manual_seed(0)
    idm = NPHMIdentity(NPHMModelConfig(**TINY, cutoff=0.0), to_nphm(layout.mean), layout.n_pairs).train()
    torch.nn.init.normal_(idm.pos_mlp[-1].weight, 0, 0.05)   # anchors that move with the code
    code = 0.3 * torch.randn(2, idm.code_dim)
    x = to_nphm(layout.mean)[None, :12] + 0.1 * torch.randn(2, 12, 3)
    fast = idm(x, code)
    assert torch.allclose(fast, _naive_identity(idm, x, code), atol=1e-5)
    # the restricted ensemble (the config's cutoff) stays within the cutoff's error of the full one
    idm.cfg.cutoff = 1e-4
    assert (idm(x, code) - fast).abs().max() < 1e-3


def test_mirrored_members_are_exact_mirrors(layout):
    torch.manual_seed(1)
    P = layout.n_pairs
    mean = to_nphm(layout.mean[:2 * P])                       # pairs only: every member but the global is mirrored
    cfg = NPHMModelConfig(**TINY, cutoff=0.0, background=-50.0)   # the global member's weight underflows to 0
    idm = NPHMIdentity(cfg, mean, P).train()
    code = 0.3 * torch.randn(1, idm.code_dim)
    glob, loc = idm.split_code(code)
    loc = loc.clone(); loc[:, 1:2 * P:2] = loc[:, 0:2 * P:2]   # each pair shares its local code
    code = torch.cat([glob, loc.flatten(1)], 1)
    x = mean[None, ::3] + 0.05 * torch.randn(1, len(mean[::3]), 3)
    assert torch.allclose(idm(x, code), idm(_mirror_x(x), code), atol=1e-6)
    # and with different codes in a pair the field is no longer symmetric: the test can fail
    code2 = code.clone(); code2[:, cfg.n_glob:cfg.n_glob + cfg.n_loc] += 1.0
    assert not torch.allclose(idm(x, code2), idm(_mirror_x(x), code2), atol=1e-4)


def test_anchor_positions_follow_the_global_code(layout):
    torch.manual_seed(2)
    idm = NPHMIdentity(NPHMModelConfig(**TINY), to_nphm(layout.mean), layout.n_pairs)
    z = torch.zeros(1, idm.code_dim)
    assert torch.allclose(idm.anchors(z)[0], to_nphm(layout.mean))   # zero code: the mean anchors
    target = idm.anchors(z).detach() + torch.tensor([0.0, 0.05, 0.02])
    z = z.requires_grad_()
    opt = torch.optim.Adam([z] + list(idm.pos_mlp.parameters()), lr=1e-2)
    e0 = (idm.anchors(z) - target).square().mean().item()
    for _ in range(100):
        opt.zero_grad(); loss = (idm.anchors(z) - target).square().mean(); loss.backward(); opt.step()
    assert loss.item() < 0.05 * e0
    z2 = z.detach().clone(); z2[:, idm.cfg.n_glob:] += 1.0                       # local codes do not move anchors
    assert torch.equal(idm.anchors(z2), idm.anchors(z.detach()))
    assert z.grad[:, idm.cfg.n_glob:].abs().max() == 0 and z.grad[:, :idm.cfg.n_glob].abs().max() > 0


@pytest.fixture(scope="module")
def expression_fit(layout):
    "An expression field trained briefly on ICT-FaceKit's neutral head and its largest blendshape (the jaw)."
    from headbook.geometry.mesh import sample_points
    torch.manual_seed(3)
    head = load_head_model("ict")
    z = torch.zeros(1, head.n_expr)
    with torch.no_grad():
        v0 = head(shape=torch.zeros(1, head.n_shape), expression=z).vertices[0]
        disp = []
        for k in range(head.n_expr):
            e = z.clone(); e[0, k] = 1.0
            disp.append((head(shape=torch.zeros(1, head.n_shape), expression=e).vertices[0] - v0).norm(dim=-1).max())
        e = z.clone(); e[0, int(torch.stack(disp).argmax())] = 1.0
        v1 = head(shape=torch.zeros(1, head.n_shape), expression=e).vertices[0]
    verts, faces = to_nphm(torch.stack([v0, v1])), head.faces.long()
    def batch(step, n=400):
        pts, _, _ = sample_points(verts, faces, n, generator=torch.Generator().manual_seed(step))
        return {"neutral": pts[:1], "posed": pts[1:]}
    m = NPHM(NPHMModelConfig(**{**TINY, "def_width": 64, "def_hidden_layers": 3}), head_anchors(head))
    id_code = torch.zeros(1, m.id_dim)
    expr = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.Adam(list(m.expression.parameters()) + [expr], lr=2e-3)
    for step in range(600):
        opt.zero_grad()
        t = expression_losses(m, id_code, expr, batch(step), NPHMExprLossWeights())
        t["loss"].backward(); opt.step()
    return m, id_code, expr.detach(), batch


def test_expression_field_maps_neutral_points_onto_posed_points(expression_fit):
    m, id_code, expr, batch = expression_fit
    b = batch(10_000, 2000)                                   # points never drawn in training
    d = (b["posed"] - b["neutral"]).norm(dim=-1)
    moving = d > 0.01                                         # the points the jaw moves (by more than 2.5 mm)
    with torch.no_grad(): err = (m.deform(b["neutral"], id_code, expr) - b["posed"]).norm(dim=-1)
    assert moving.sum() > 100 and d[moving].mean() > 0.05    # the expression really moves the face (> 1 cm)
    assert err[moving].mean() < 0.25 * d[moving].mean(), (float(err[moving].mean()), float(d[moving].mean()))
    assert err[~moving].mean() < 0.1 * d[moving].mean()        # and leaves the rest of the head nearly still


def test_broyden_through_the_trained_field_finds_canonical_points(expression_fit):
    m, id_code, expr, batch = expression_fit
    b = batch(20_000)
    with torch.no_grad():
        posed = m.deform(b["neutral"], id_code, expr)
        r = m.canonical(posed, id_code, expr)
    assert r.converged.all()
    assert (r.x.view(posed.shape) - b["neutral"]).abs().max() < 1e-5


def test_canonical_points_give_gradients_to_the_codes(expression_fit):
    m, id_code, expr, batch = expression_fit
    p = batch(5, 20)["posed"]
    e = expr.clone().requires_grad_()
    x = m.canonical(p, id_code, e).x
    x.sum().backward()
    assert e.grad is not None and e.grad.abs().sum() > 0


def test_units_round_trip_and_bad_inputs(layout):
    x = torch.randn(5, 3)
    assert torch.allclose(from_nphm(to_nphm(x)), x)
    with pytest.raises(ValueError, match="kind must be"): NPHMModelConfig(kind="deepsdf")
    with pytest.raises(ValueError, match="needs the anchor layout"): NPHM(NPHMModelConfig(**TINY))
    m = NPHM(NPHMModelConfig(**TINY), layout)
    with pytest.raises(ValueError, match="code must have shape"): m.sdf(torch.zeros(1, 4, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="x must have shape"): m.sdf(torch.zeros(2, 4, 3), torch.zeros(1, m.id_dim))
    with pytest.raises(ValueError, match="stage must be"): nphm_config("smoke", {"stage": "both"})
    with pytest.raises(ValueError, match="needs identity_run"):
        train_nphm(nphm_config("smoke", {"stage": "expression"}), progress=False)


def test_npm_baseline_has_the_same_interface(layout, tmp_path):
    cfg = nphm_config("npm_smoke", {"steps": 2})
    res = train_nphm(cfg, tmp_path / "npm", progress=False)
    assert res.step == 2 and all(math.isfinite(l) for l in res.losses)
    t = load_nphm(tmp_path / "npm")
    assert t.model.identity.anchors(t.id_codes[:1]) is None and t.id_codes.shape == (4, 16)
    x = torch.zeros(1, 3, 3)
    assert t.model.sdf(x, t.id_codes[:1]).shape == (1, 3)


def test_a_killed_nphm_run_resumes_exactly(tmp_path):
    from headbook.train.loop import check_resume_exact
    cfg = nphm_config("smoke", {"steps": 4, "ckpt_every": 2})
    check_resume_exact(lambda d, stop: train_nphm(cfg, d, progress=False, stop_after=stop), tmp_path / "id", 2)
    # the expression stage, on top of that identity run
    ex = nphm_config("smoke", {"stage": "expression", "identity_run": str(tmp_path / "id" / "full"), "steps": 4,
                               "ckpt_every": 2})
    check_resume_exact(lambda d, stop: train_nphm(ex, d, progress=False, stop_after=stop), tmp_path / "ex", 2)


def test_resume_with_changed_settings_is_refused_then_applied(tmp_path):
    from headbook.train.loop import ResumeSettingsError, read_metrics
    cfg = nphm_config("smoke", {"steps": 2, "ckpt_every": 2})
    train_nphm(cfg, tmp_path / "r", progress=False)
    more = nphm_config("smoke", {"steps": 4, "ckpt_every": 2, "lr": 0.05})
    with pytest.raises(ResumeSettingsError, match="lr"): train_nphm(more, tmp_path / "r", progress=False)
    res = train_nphm(more, tmp_path / "r", progress=False, allow_changes=True)
    assert res.resumed_from == 2 and res.step == 4
    assert read_metrics(tmp_path / "r")[-1]["lr"] == pytest.approx(0.05)


def test_load_nphm_refuses_other_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no NPHM checkpoint"): load_nphm(tmp_path / "nothing")
    torch.save({"model": {"w": torch.zeros(1)}, "extra": {"config": {"preset": "x"}}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an NPHM checkpoint"): load_nphm(tmp_path / "other.pt")


DDP_SCRIPT = '''
import sys
from headbook.nphm.train import nphm_config, train_nphm
from headbook.train.loop import cleanup_distributed
train_nphm(nphm_config("smoke", {"steps": 3, "batch_size": 2, "ckpt_every": 3}), run_dir=sys.argv[1], progress=False)
cleanup_distributed()
'''


def test_nphm_under_torchrun_two_gloo_processes_matches_one(tmp_path):
    "The NPHM trainer under torchrun (gloo): 2 processes x 1 head == 1 process x 2 heads after 3 steps."
    from headbook.train.loop import check_ddp_matches_single, read_metrics
    script = tmp_path / "ddp_nphm.py"; script.write_text(DDP_SCRIPT)
    one, two = check_ddp_matches_single(script, tmp_path)
    assert [r["step"] for r in read_metrics(two)] == [1, 2, 3]
