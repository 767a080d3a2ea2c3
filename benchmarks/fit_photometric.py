"""Photometric fitting speed on this machine's CPU at 224 px with synthhead (5.6k vertices).

Run: python benchmarks/fit_photometric.py [--quick]      speed
     python benchmarks/fit_photometric.py --accuracy [PRESET ...] [--seed N]   accuracy on a fixed synthetic set (seed 1)
         (`outline` fits the whole rendered head: the head mask as photometric support plus the outline term;
          every other preset the skin mask)
     python benchmarks/fit_photometric.py --oracle    the whole-head error if the face crop were known (no fitting)
Prints one `name: value unit` line per figure. Threads: torch's default (set OMP_NUM_THREADS to pin).

The accuracy set: `synthetic_scene(model, batch=8, seed=1)` for synthhead (albedo basis) and
`batch=4, seed=1` for ICT-FaceKit (no albedo space: rendered with a random smooth albedo, fitted with the free
per-vertex albedo); identity σ = 1, expression σ = 0.5, yaw within ±30°, random directional SH light, 224 px.
Reported: mean over the photos of the mean landmark reprojection error (px) and of the median neutral-vertex
error after a similarity alignment (mm), over the whole head and over NoW's face crop of each true head
(`neutral_vertex_error(..., region="now")`: the ball around the face that the NoW protocol keeps), the
template (β = 0) baseline, and `gt_init` (the fit started at the true parameters: is the truth a minimum?).
"""
import sys
import time
from dataclasses import replace

import torch

from headbook.fit import PRESETS, fit_photometric
from headbook.data.scene import synthetic_scene
from headbook.eval.vertex import neutral_vertex_error
from headbook.models import load_head_model


def fit_seconds(head, scene, cfg):
    t0 = time.perf_counter()
    res = fit_photometric(scene.images, scene.landmarks68, scene.masks, head, cfg)
    return time.perf_counter() - t0, res


def main(quick: bool = False):
    head = load_head_model("synthhead")
    one = synthetic_scene(head, batch=1, seed=0)
    fit_seconds(head, one, replace(PRESETS["smoke"], rigid_iters=3, full_iters=3, progress=False))   # warm-up
    # per-iteration cost of each stage (exact visibility every step, as the seed, and the presets' reuse)
    _, r = fit_seconds(head, one, replace(PRESETS["paper"], rigid_iters=50, full_iters=12, raster_every=1, progress=False))
    print(f"fit_rigid_per_iter: {r.timings['rigid_per_iter']:.4f} s")
    print(f"fit_full_per_iter_raster_every_1: {r.timings['full_per_iter']:.4f} s")
    for k in (4,):
        _, r = fit_seconds(head, one, replace(PRESETS["paper"], rigid_iters=1, full_iters=24, raster_every=k, progress=False))
        print(f"fit_full_per_iter_raster_every_{k}: {r.timings['full_per_iter']:.4f} s")
    # one photo, whole fit (render at the end included), per preset
    for name in (("smoke",) if quick else ("smoke", "default")):
        s, _ = fit_seconds(head, one, replace(PRESETS[name], progress=False))
        print(f"fit_seconds_per_photo_{name}: {s:.2f} s")
    # batching: 8 photos in one optimisation vs 1 (smoke preset)
    eight = synthetic_scene(head, batch=8, seed=1)
    s1, _ = fit_seconds(head, one, replace(PRESETS["smoke"], progress=False))
    s8, _ = fit_seconds(head, eight, replace(PRESETS["smoke"], progress=False))
    print(f"fit_batch8_seconds_smoke: {s8:.2f} s")
    print(f"fit_batch8_over_batch1: {s8 / s1:.2f} x")


def accuracy(presets, seed=1):
    for name, batch in (("synthhead", 8), ("ict", 4)):
        head = load_head_model(name)
        sc = synthetic_scene(head, batch=batch, seed=seed)
        gt = sc.params["shape"]
        zero = torch.zeros_like(gt)
        print(f"{name}_template_neutral: {neutral_vertex_error(head, zero, gt).mean():.2f} mm")
        print(f"{name}_template_neutral_now_crop: {neutral_vertex_error(head, zero, gt, 'now').mean():.2f} mm")
        runs = [(p, PRESETS[p], None) for p in presets] + [("gt_init", replace(PRESETS["default"], rigid_iters=0), sc.params)]
        for tag, cfg, init in runs:
            t0 = time.perf_counter()
            # `outline` fits the whole rendered head (photometric support and outline term); the others the skin mask
            masks = sc.head_masks if cfg.w_silhouette > 0 else sc.masks
            res = fit_photometric(sc.images, sc.landmarks68, masks, head, replace(cfg, progress=False), init=init,
                                  head_masks=sc.head_masks)
            s = time.perf_counter() - t0
            lmk = (res.landmarks2d - sc.landmarks68).norm(dim=-1).mean(1)
            print(f"{name}_{tag}_landmarks: {lmk.mean():.2f} px")
            print(f"{name}_{tag}_neutral: {neutral_vertex_error(head, res.parameters['shape'], gt).mean():.2f} mm")
            print(f"{name}_{tag}_neutral_now_crop: {neutral_vertex_error(head, res.parameters['shape'], gt, 'now').mean():.2f} mm")
            print(f"{name}_{tag}_seconds_per_photo: {s / batch:.1f} s", flush=True)


def oracle(seed=1):
    "How well does the face crop determine the whole head? Posterior-mean identity from the exact, noisy face crop."
    import numpy as np
    from headbook.eval.now import crop_face
    from headbook.landmarks import IBUG68_TO_NOW7
    for name, batch in (("synthhead", 8), ("ict", 4)):
        head = load_head_model(name)
        gt = synthetic_scene(head, batch=batch, seed=seed).params["shape"]
        n = head.n_shape
        with torch.no_grad():
            o = head()
            T, L = o.vertices[0].double().numpy(), o.landmarks[0].double().numpy()
            basis = np.stack([(head(shape=torch.eye(n)[i:i + 1]).vertices[0].double().numpy() - T) for i in range(n)], -1)
            V = np.stack([head(shape=gt[b:b + 1]).vertices[0].double().numpy() for b in range(batch)])
        m = np.isin(np.arange(len(T)), crop_face(T * 1000, L[IBUG68_TO_NOW7] * 1000).vertex_ids)
        Bf, Bh = basis[m].reshape(-1, n), basis.reshape(-1, n)
        _, _, Vt = np.linalg.svd(Bf, full_matrices=False)
        w = Vt[-1]                                                    # the identity direction the face sees least
        print(f"{name}_weakest_direction_face_rms: {np.linalg.norm(Bf @ w) / np.sqrt(m.sum()) * 1000:.3f} mm per unit coefficient")
        print(f"{name}_weakest_direction_head_rms: {np.linalg.norm(Bh @ w) / np.sqrt(len(T)) * 1000:.3f} mm per unit coefficient")
        rng = np.random.default_rng(0)
        for sigma in (0.1, 0.5):                                      # mm of independent noise per face vertex
            est = [np.linalg.solve(Bf.T @ Bf + (sigma / 1000) ** 2 * np.eye(n),
                                   Bf.T @ ((V[b] - T)[m].ravel() + rng.normal(0, sigma / 1000, m.sum() * 3))) for b in range(batch)]
            est = torch.tensor(np.stack(est), dtype=torch.float32)
            print(f"{name}_oracle_face_sigma{sigma}_neutral: {neutral_vertex_error(head, est, gt).mean():.2f} mm")


if __name__ == "__main__":
    if "--oracle" in sys.argv:
        oracle(int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 1)
        sys.exit(0)
    if "--accuracy" in sys.argv:
        seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 1
        args = [a for i, a in enumerate(sys.argv[1:], 1) if not a.startswith("--") and sys.argv[i - 1] != "--seed"]
        accuracy(args or ["default", "paper", "accurate", "outline"], seed)
    else:
        main(quick="--quick" in sys.argv)
