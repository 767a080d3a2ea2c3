"ms per frame of the mesh renderer and the 2DGS rasteriser (CPU; gsplat and PyTorch3D CUDA where a GPU is present)."
import math
import time
import torch
from headbook.geometry.cameras import look_at, intrinsics
from headbook.render import render_mesh, RasterSettings, directional_sh, rasterize_2dgs

def grid_sphere(n_verts: int, r: float = 0.1):
    "A UV sphere with about n_verts vertices (no poles shared), faces counter-clockwise from outside."
    n = int(round(math.sqrt(n_verts / 2)))
    th = torch.linspace(0.05, math.pi - 0.05, n); ph = torch.linspace(0, 2 * math.pi, 2 * n + 1)[:-1]
    T, P = torch.meshgrid(th, ph, indexing="ij")
    V = torch.stack([torch.sin(T) * torch.sin(P), torch.cos(T), torch.sin(T) * torch.cos(P)], -1).reshape(-1, 3) * r
    i = torch.arange(n - 1)[:, None]; j = torch.arange(2 * n)[None]
    a = i * 2 * n + j; b = i * 2 * n + (j + 1) % (2 * n); c = a + 2 * n; d = b + 2 * n
    F = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])
    return V[None], F

def timeit(fn, n=3):
    fn()
    if torch.cuda.is_available(): torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n): fn()
    if torch.cuda.is_available(): torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1000

def bench_mesh(device="cpu"):
    R, t = look_at(torch.tensor([[0., 0, 0.35]]), torch.zeros(1, 3)); K = intrinsics(300., (224, 224))
    sh = directional_sh(torch.tensor([[0., 0, 1.]]), color=0.8, ambient=0.3)
    K, R, t, sh = K.to(device), R.to(device), t.to(device), sh.to(device)
    for nv in (5000, 25000):
        V, F = grid_sphere(nv); V, F = V.to(device), F.to(device)
        configs = [("vertex", 32), ("pixel", 32)] + ([("vertex", 16), ("vertex", 64)] if device == "cpu" else [])
        if device == "cpu" and nv == 5000: configs.append(("vertex", 0))   # PyTorch3D naive (the seed's path)
        for shading, tile in configs:
            s = RasterSettings(shading=shading, tile_size=tile)
            tag = f"mesh_{device}_224px_{V.shape[1]}v_{shading}_" + ("naive" if tile == 0 else f"tile{tile}")
            print(f"{tag}_fwd: {timeit(lambda: render_mesh(V, F, K, R, t, (224, 224), sh=sh, settings=s)):.1f} ms", flush=True)
            Vg = V.clone().requires_grad_()
            def fb():
                render_mesh(Vg, F, K, R, t, (224, 224), sh=sh, settings=s).image.sum().backward()
            print(f"{tag}_fwdbwd: {timeit(fb):.1f} ms", flush=True)

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
            print(f"{tag}_fwd: {timeit(lambda: rasterize_2dgs(means, q, sc, op, col, vm, K, size, size, backend=backend), n=2):.1f} ms", flush=True)
            mg = means.clone().requires_grad_()
            def fb():
                rasterize_2dgs(mg, q, sc, op, col, vm, K, size, size, backend=backend).colors.sum().backward()
            print(f"{tag}_fwdbwd: {timeit(fb, n=2):.1f} ms", flush=True)

if __name__ == "__main__":
    print(f"threads: {torch.get_num_threads()} value")
    bench_mesh("cpu")
    bench_gaussians("cpu", "torch")
    if torch.cuda.is_available():
        bench_mesh("cuda")
        bench_gaussians("cuda", "torch")
        try:
            import gsplat  # noqa: F401
            bench_gaussians("cuda", "gsplat")
        except ImportError:
            print("gsplat: not installed")
