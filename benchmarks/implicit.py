"""Speed of the implicit-surfaces core: the batched MLP ensemble against its per-member loop, Broyden, sphere
tracing and marching cubes (CPU; the same on CUDA where a GPU is present).

Run: OMP_NUM_THREADS=1 python benchmarks/implicit.py
Prints one `name: value unit` line per figure; each time is the best of a few repeats (the build machine is shared,
so the minimum is the figure least disturbed by other jobs).

Scenes: the ensemble is 64 members of 4 layers of 64 (NPHM-like local MLPs) on 512 and on 32 points each;
Broyden inverts the book's LBS on synthhead (neck 0.3 rad, jaw 0.25 rad, a Gaussian-kernel weight field on 800
vertices) for 2000 queries with one start per bone (5); sphere tracing renders an `SDFNetwork` (4 layers of 128,
skip at 2, 4 octaves, sphere initialisation of radius 0.1 m) under a pinhole camera 0.5 m away, SH-shaded;
marching cubes runs on the grid of an analytic sphere; `extract_mesh` runs on the same 4 x 128 network.
"""
import time
import torch
from headbook.implicit.fields import MLPEnsemble, SDFNetwork
from headbook.implicit.roots import find_roots
from headbook.implicit.extract import sdf_grid, marching_cubes, extract_mesh
from headbook.render.implicit import render_sdf
from headbook.render import directional_sh
from headbook.geometry.cameras import look_at, intrinsics
from _timing import best_seconds


timeit = best_seconds   # seconds


def bench_ensemble():
    torch.manual_seed(0)
    M = 64
    ens = MLPEnsemble(n_members=M, d_out=1, width=64, n_layers=4)
    for N in (512, 32):   # points per member: a full batch, and the few points each member keeps after the cutoff
        x = torch.randn(M, N, 3)
        with torch.no_grad():
            tb = timeit(lambda: ens(x), n=20); tl = timeit(lambda: ens.forward_loop(x), n=20)
        print(f"ensemble_batched_64x{N}: {M * N / tb:.3g} evals/s")
        print(f"ensemble_loop_64x{N}: {M * N / tl:.3g} evals/s")
        print(f"ensemble_speedup_64x{N}: {tl / tb:.1f} x")
    # with gradients (training): forward + backward
    x = torch.randn(M, 512, 3)
    def fb(f): f(x).sum().backward()
    tb = timeit(lambda: fb(ens), n=5); tl = timeit(lambda: fb(ens.forward_loop), n=5)
    print(f"ensemble_fwdbwd_speedup_64x512: {tl / tb:.1f} x")
    # NPHM-like blend: 64 anchors spread over a head-sized ball, sigma 1/4 of the spacing; dense vs cutoff 1e-4
    from headbook.implicit.fields import blend_ensemble
    g = torch.Generator().manual_seed(0)
    c = torch.randn(M, 3, generator=g) * 0.1; p = torch.randn(8192, 3, generator=g) * 0.1
    with torch.no_grad():
        td = timeit(lambda: blend_ensemble(ens, p, c, 0.02), n=5)
        ts = timeit(lambda: blend_ensemble(ens, p, c, 0.02, cutoff=1e-4), n=5)
    print(f"ensemble_blend_dense_8192pts: {8192 / td:.3g} points/s")
    print(f"ensemble_blend_cutoff_8192pts: {8192 / ts:.3g} points/s")
    print(f"ensemble_blend_cutoff_speedup: {td / ts:.1f} x")


def bench_broyden():
    from headbook.models import load_head_model
    from headbook.models.lbs import rigid_transforms, vertices_to_joints
    from headbook.geometry.rotations import axis_angle_to_matrix
    head = load_head_model("synthhead")
    vt = head.v_template.float()
    g = torch.Generator().manual_seed(0)
    anchors = torch.randperm(vt.shape[0], generator=g)[:800]
    av, aw = vt[anchors], head.weights.float()[anchors]
    pose = torch.zeros(1, 5, 3); pose[0, 1, 1] = 0.3; pose[0, 2, 0] = 0.25
    J0 = vertices_to_joints(head.J_regressor.float(), vt[None])
    A = rigid_transforms(axis_angle_to_matrix(pose), J0, head.parents)[1][0]

    def fn(x, qi):
        w = torch.softmax(-torch.cdist(x, av) ** 2 / (2 * 0.01 ** 2), dim=1) @ aw
        T = torch.einsum("pk,kij->pij", w, A)
        return (T[:, :3, :3] @ x[..., None])[..., 0] + T[:, :3, 3]
    xc = vt[torch.randint(0, vt.shape[0], (2000,), generator=g)] + 0.002 * torch.randn(2000, 3, generator=g)
    with torch.no_grad(): xd = fn(xc, None)
    Ainv = torch.linalg.inv(A)
    starts = (Ainv[None, :, :3, :3] @ xd[:, None, :, None])[..., 0] + Ainv[None, :, :3, 3]
    res = {}
    def run(): res["r"] = find_roots(fn, xd, starts, tol=1e-6, max_iter=50, max_step=0.02)
    t = timeit(run, n=3)
    print(f"broyden_lbs_synthhead_2000x5: {2000 / t:.0f} queries/s")
    print(f"broyden_lbs_converged: {float(res['r'].converged.float().mean()):.4f} fraction")


def bench_trace():
    net = SDFNetwork(width=128, n_layers=4, skips=(2,), n_freqs=4, radius=0.4, input_scale=4.0)
    R, t = look_at(torch.tensor([[0.2, 0.1, 0.5]]), torch.zeros(1, 3))
    sh = directional_sh(torch.tensor([[0.3, 0.5, 1.0]]), color=0.8, ambient=0.3)
    for size in (128, 256):
        K = intrinsics(1.6 * size, (size, size))
        out = {}
        def run(): out["r"] = render_sdf(net, K, R, t, (size, size), sh=sh, near=0.3, far=0.8)
        s = timeit(run, n=3)
        print(f"sphere_trace_{size}px_fps: {1 / s:.2f} frames/s")
        print(f"sphere_trace_{size}px_coverage: {float(out['r'].mask.mean()):.2f} fraction")


def bench_marching_cubes():
    from pytorch3d.ops.marching_cubes import marching_cubes as p3d_mc
    sphere = lambda p: p.norm(dim=-1) - 0.6
    for R in (128, 256):
        grid = sdf_grid(sphere, [-1] * 3, [1] * 3, R)
        print(f"marching_cubes_skimage_{R}: {timeit(lambda: marching_cubes(grid, [-1] * 3, [1] * 3), n=5):.3f} s")
        s = timeit(lambda: p3d_mc(grid[None], 0.0, return_local_coords=True), n=5)
        print(f"marching_cubes_pytorch3d_{R}: {s:.3f} s")


def bench_extract():
    net = SDFNetwork(width=128, n_layers=4, skips=(2,), n_freqs=4, radius=0.5)
    for c2f in (False, True):
        out = {}
        def run(): out["m"] = extract_mesh(net, [-1] * 3, [1] * 3, resolution=128, coarse_to_fine=c2f)
        s = timeit(run, n=1, warmup=False)
        tag = "coarse_to_fine" if c2f else "full_grid"
        print(f"extract_mesh_128_{tag}: {s:.2f} s")
        print(f"extract_mesh_128_{tag}_evaluations: {out['m'].evaluated} count")


if __name__ == "__main__":
    print(f"threads: {torch.get_num_threads()} count")
    bench_ensemble()
    bench_broyden()
    bench_trace()
    bench_marching_cubes()
    bench_extract()
