"""ms per frame of the mesh renderer and the 2DGS rasteriser (CPU; PyTorch3D CUDA and gsplat where a GPU is present).

Run: python benchmarks/render.py [--quick]
Prints one `name: value unit` line per figure; each time is the best of a few repeats (the build machine is
shared, so the minimum is the figure least disturbed by other jobs). Threads: torch's default (set
OMP_NUM_THREADS to pin). `--quick` skips the slow PyTorch3D naive entries at 22k vertices and the Gaussians.

Mesh scene: synthhead (5632 vertices, 11252 faces) and one step of its midpoint subdivision (`trimesh.remesh.subdivide`: 22k vertices,
45k faces), 224x224, a camera framing the head like a face crop, per-vertex albedo and SH light, as the
photometric fit renders it. Paths: PyTorch3D's naive CPU kernel (the seed's path, `bin_size=None` on CPU),
PyTorch3D's naive kernel binned into 32 px tiles (the previous default), and the torch z-buffer (now the default).
"""
import sys
import time
import torch
from headbook.geometry.cameras import look_at, intrinsics
from headbook.render import render_mesh, RasterSettings, directional_sh, rasterize_2dgs
from _timing import best_seconds


def timeit(fn, n=3, budget_s=30.0, warmup=True):
    "Best time in ms over up to n calls; stops early once budget_s is spent (at least one call)."
    return best_seconds(fn, n, budget_s, warmup) * 1000


def head_scene(subdivide: bool):
    import trimesh
    from headbook.models import load_head_model
    head = load_head_model("synthhead")
    V, F = head().vertices.detach()[0], head.faces.long()
    if subdivide:
        v, f = trimesh.remesh.subdivide(V.numpy(), F.numpy())
        V, F = torch.tensor(v, dtype=torch.float32), torch.tensor(f, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    return V[None], F, (0.35 + 0.4 * torch.rand(1, V.shape[0], 3, generator=g))


def bench_mesh(device="cpu", quick=False):
    size = (224, 224)
    R, t = look_at(torch.tensor([[0.0, 0.02, 0.5]]), torch.tensor([[0.0, 0.01, 0.0]])); K = intrinsics(560., size)
    sh = directional_sh(torch.tensor([[0.2, 0.3, 1.]]), color=0.8, ambient=0.3)
    K, R, t, sh = K.to(device), R.to(device), t.to(device), sh.to(device)
    fwdbwd = {}
    for sub in (False, True):
        V, F, alb = (x.to(device) for x in head_scene(sub))
        tag_v = f"{V.shape[1] // 1000}k" if sub else "5k"
        configs = [("zbuffer", RasterSettings(backend="zbuffer")),
                   ("zbuffer_pixelshading", RasterSettings(backend="zbuffer", shading="pixel"))]
        if device == "cpu":
            configs += [("tiles32", RasterSettings(backend="pytorch3d", tile_size=32))]
            if not (quick and sub): configs += [("naive", RasterSettings(backend="pytorch3d", tile_size=0))]
        else:
            configs += [("pytorch3d_coarse2fine", RasterSettings(backend="pytorch3d"))]
        cover = render_mesh(V, F, K, R, t, size, settings=RasterSettings(backend="zbuffer")).mask.mean().item()
        print(f"mesh_{device}_224px_{tag_v}_vertices: {V.shape[1]} count", flush=True)
        print(f"mesh_{device}_224px_{tag_v}_coverage: {cover:.2f} fraction", flush=True)
        for name, s in configs:
            slow = name == "naive"
            n, budget = (1, 0.0) if slow else (15, 10.0)
            tag = f"mesh_{device}_224px_{tag_v}_{name}"
            ms = timeit(lambda: render_mesh(V, F, K, R, t, size, albedo=alb, sh=sh, settings=s), n=n, budget_s=budget, warmup=not slow)
            print(f"{tag}_fwd: {ms:.1f} ms", flush=True)
            Vg = V.clone().requires_grad_(); shg = sh.clone().requires_grad_()
            def fb():
                render_mesh(Vg, F, K, R, t, size, albedo=alb, sh=shg, settings=s).image.sum().backward()
            ms = timeit(fb, n=n, budget_s=budget, warmup=not slow)
            fwdbwd[(tag_v, name)] = ms
            print(f"{tag}_fwdbwd: {ms:.1f} ms", flush=True)
        for ref in ("naive", "tiles32"):
            if (tag_v, ref) in fwdbwd:
                print(f"mesh_speedup_vs_{ref}_fwdbwd_{tag_v}: {fwdbwd[(tag_v, ref)] / fwdbwd[(tag_v, 'zbuffer')]:.1f} x", flush=True)


def bench_gaussians(device="cpu", backend="torch"):
    g = torch.Generator().manual_seed(0)
    for size in (128, 256):
        for N in (5000, 20000):
            f = size * 1.0
            K = torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]], device=device); vm = torch.eye(4, device=device)[None]
            means = torch.cat([(torch.rand(N, 2, generator=g) - 0.5), 1 + torch.rand(N, 1, generator=g)], 1).to(device)
            q = torch.nn.functional.normalize(torch.randn(N, 4, generator=g), dim=-1).to(device)
            sc = torch.full((N, 3), 2.0 / f, device=device)                # ~4 px footprints
            op = torch.full((N,), 0.7, device=device); col = torch.rand(N, 3, generator=g).to(device)
            tag = f"gs2d_{backend}_{device}_{size}px_{N // 1000}k"
            print(f"{tag}_fwd: {timeit(lambda: rasterize_2dgs(means, q, sc, op, col, vm, K, size, size, backend=backend), n=2, budget_s=10):.1f} ms", flush=True)
            mg = means.clone().requires_grad_()
            def fb():
                rasterize_2dgs(mg, q, sc, op, col, vm, K, size, size, backend=backend).colors.sum().backward()
            print(f"{tag}_fwdbwd: {timeit(fb, n=2, budget_s=10):.1f} ms", flush=True)


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    print(f"threads: {torch.get_num_threads()} count")
    bench_mesh("cpu", quick)
    if not quick: bench_gaussians("cpu", "torch")
    if torch.cuda.is_available():
        bench_mesh("cuda")
        bench_gaussians("cuda", "torch")
        try:
            import gsplat  # noqa: F401
            bench_gaussians("cuda", "gsplat")
        except ImportError:
            print("gsplat: not installed")
