"""NPHM speed: SDF evaluations per second of the local ensemble (restricted to the anchors that matter, every
anchor, and a per-member loop), and seconds per training and fitting step at the `small` preset.

Run: OMP_NUM_THREADS=1 python benchmarks/nphm.py          (on a CUDA machine the same runs on the GPU, and the
     `paper` sizes are timed too)
Prints one `name: value unit` line per figure; each time is the best of a few repeats (the machine is shared).

Scene: the paper's identity network (39 anchors + 1 global member, 4 x 200, codes 64 + 40 x 32) on ICT-FaceKit's
anchors, 20 000 points within 1 cm (NPHM units: 0.04) of the ICT mean head; the codes are random (N(0, 0.1^2)).
"""
import torch
import torch.nn.functional as F
from headbook.models.registry import load_head_model
from headbook.geometry.mesh import sample_points
from headbook.nphm.model import NPHMIdentity, NPHMModelConfig, head_anchors, to_nphm
from headbook.nphm.train import nphm_config, NPHMData
from headbook.nphm.fit import fit_pointcloud, fit_config
from headbook.data.points import depth_scan
from _timing import best_seconds

dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def per_member_loop(idm: NPHMIdentity, x, code):  # [1, N, 3], [1, D]: every anchor's MLP on every point, one by one
    glob, loc = idm.split_code(code)
    A = torch.cat([idm.anchors(code)[0], x.new_zeros(1, 3)])
    logit = -((x[0, :, None] - A[None]) ** 2).sum(-1) / idm.cfg.sigma ** 2
    logit[:, -1] = idm.cfg.background / idm.cfg.sigma ** 2
    w = torch.softmax(logit, 1)
    ens, out = idm.ensemble, torch.zeros(x.shape[1], device=x.device)
    for k in range(idm.K + 1):
        m = int(idm.member[k])
        local = x[0] - A[k]
        if idm.mirror[k]: local = local * local.new_tensor([-1.0, 1.0, 1.0])
        h = inp = torch.cat([local, glob.expand(len(local), -1), loc[0, k].expand(len(local), -1)], 1)
        for l, (W, b) in enumerate(zip(ens.weights, ens.biases)):
            if l in ens.skips: h = torch.cat([h, inp], -1)
            h = h @ W[m] + b[m]
            if l < len(ens.weights) - 1: h = F.softplus(h, beta=100)
        out += w[:, k] * h[:, 0]
    return out


def bench_sdf():
    head = load_head_model("ict")
    layout = head_anchors(head)
    idm = NPHMIdentity(NPHMModelConfig(), to_nphm(layout.mean), layout.n_pairs).to(dev).eval()
    v = to_nphm(head.v_template.float())[None]
    g = torch.Generator().manual_seed(0)
    pts = sample_points(v, head.faces.long(), 20000, generator=g)[0]
    x = (pts + 0.04 * (torch.rand(pts.shape, generator=g) - 0.5)).to(dev)
    code = (0.1 * torch.randn(1, idm.code_dim, generator=g)).to(dev)
    N = x.shape[1]
    with torch.no_grad():
        t_r = best_seconds(lambda: idm(x, code, cutoff=1e-4), n=3)
        t_f = best_seconds(lambda: idm(x, code, cutoff=0.0), n=2)
        t_l = best_seconds(lambda: per_member_loop(idm, x, code), n=2)
    print(f"nphm_sdf_restricted: {N / t_r:.3g} evals/s")
    print(f"nphm_sdf_all_anchors: {N / t_f:.3g} evals/s")
    print(f"nphm_sdf_per_member_loop: {N / t_l:.3g} evals/s")
    print(f"nphm_sdf_restricted_vs_loop: {t_l / t_r:.1f} x")
    print(f"nphm_sdf_restricted_vs_all: {t_f / t_r:.1f} x")


def bench_steps(preset: str, n: int = 6):
    "One optimisation step of each stage (data drawn, forward, backward, Adam), and one fitting step, per model."
    from headbook.nphm.model import NPHM
    from headbook.nphm.train import NPHMStep, _optimizer
    for kind in ("", "npm_"):
        name = "npm" if kind else "nphm"
        for stage in ("identity", "expression"):
            cfg = nphm_config(kind + preset, {"stage": stage})
            data = NPHMData(cfg.data)
            step = NPHMStep(NPHM(cfg.model, data.layout), cfg).to(dev)
            opt, _ = _optimizer(step, cfg)
            def one(k):
                if stage == "identity":
                    idx = torch.arange(cfg.batch_size) % cfg.data.n_identities
                    b = data.identity_batch(idx, k)
                else:
                    idx = torch.stack([torch.arange(cfg.batch_size), torch.ones(cfg.batch_size, dtype=torch.long)], 1)
                    b = data.expression_batch(idx, k)
                out = step({key: v.to(dev) for key, v in b.items()}, idx.to(dev), k)
                opt.zero_grad(); out["loss"].backward(); opt.step()
            one(0)                                               # builds the samplers of these identities
            t = best_seconds(lambda: one(1), n=n, warmup=False)
            print(f"{name}_{preset}_{stage}_step: {t:.3g} s")
        model = step.model.eval()
        scan = depth_scan(data.mesh(0, 1, "test") / 4, data.faces, image_size=128)
        for expr in (False, True):
            c = fit_config(preset, {"steps": 4, "fit_expression": expr})
            t = best_seconds(lambda: fit_pointcloud(model, to_nphm(scan.points).to(dev), c), n=2) / c.steps
            print(f"{name}_{preset}_fit_step{'_with_expression' if expr else ''}: {t:.3g} s")


if __name__ == "__main__":
    bench_sdf()
    bench_steps("small")
    if dev.type == "cuda": bench_steps("paper")
