"""FLAME forward speed: headbook vs smplx on the same FLAME-sized model (5023 vertices, 300 shape, 100
expression, 36 pose correctives), batch 1 and 64, CPU. Prints `name: value unit` lines.

The model is random data of FLAME's exact sizes written in FLAME's pkl layout (FLAME itself needs a
registration), so both libraries read the same file. The memory-bound limit at batch 1 is the time to
read the blend-shape matrix once at the bandwidth this machine reaches on a large streaming sum.
"""
import sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import random_head_data  # noqa: E402
from headbook.models.flame import FLAME, HeadModelData  # noqa: E402
from headbook.models.assets import write_flame_pkl  # noqa: E402


def flame_sized(seed=0) -> HeadModelData:
    import dataclasses
    small = random_head_data(V_sub=2, S=2, E=2, seed=seed)
    rng = np.random.default_rng(seed)
    V = 5023
    # tile the small sphere's vertices up to V (geometry is irrelevant for timing; sizes are FLAME's)
    import trimesh
    ico = trimesh.creation.icosphere(subdivisions=5, radius=0.08)
    v = np.asarray(ico.vertices, np.float32)[:V]
    f = np.asarray(ico.faces, np.int64); f = f[(f < V).all(1)][:9976]
    w = rng.random((V, 5)).astype(np.float32) ** 4; w /= w.sum(1, keepdims=True)
    J = np.zeros((5, V), np.float32)
    for j in range(5): J[j, rng.choice(V, 20, replace=False)] = 1 / 20
    return dataclasses.replace(small, v_template=v, faces=f,
                               shapedirs=(rng.standard_normal((V, 3, 300)) * 1e-3).astype(np.float32),
                               exprdirs=(rng.standard_normal((V, 3, 100)) * 1e-3).astype(np.float32),
                               posedirs=(rng.standard_normal((V, 3, 36)) * 1e-3).astype(np.float32),
                               J_regressor=J, weights=w, eyelid_dirs=None,
                               static_lmk_faces_idx=small.static_lmk_faces_idx % len(f),
                               dynamic_lmk_faces_idx=small.dynamic_lmk_faces_idx % len(f))


def timeit(fn, reps, warm=5):
    for _ in range(warm): fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def main():
    import argparse
    ap = argparse.ArgumentParser(); ap.add_argument("--threads", type=int, default=2); a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"threads: {a.threads} count")
    import smplx
    data = flame_sized()
    ours = FLAME(data)
    with tempfile.TemporaryDirectory() as d:
        write_flame_pkl(data, Path(d) / "FLAME_NEUTRAL.pkl")
        peers = {B: smplx.FLAME(model_path=d, num_betas=300, num_expression_coeffs=100, batch_size=B, create_transl=False) for B in (1, 64)}
    for B in (1, 64):
        g = torch.Generator().manual_seed(B)
        p = dict(shape=torch.randn(B, 300, generator=g), expression=torch.randn(B, 100, generator=g),
                 global_pose=torch.randn(B, 3, generator=g) * .2, neck_pose=torch.randn(B, 3, generator=g) * .2,
                 jaw_pose=torch.randn(B, 3, generator=g) * .2, left_eye_pose=torch.randn(B, 3, generator=g) * .2,
                 right_eye_pose=torch.randn(B, 3, generator=g) * .2)
        peer = peers[B]
        q = dict(betas=p["shape"], expression=p["expression"], global_orient=p["global_pose"], neck_pose=p["neck_pose"],
                 jaw_pose=p["jaw_pose"], leye_pose=p["left_eye_pose"], reye_pose=p["right_eye_pose"])
        with torch.no_grad():
            err = (ours(**p).vertices - peer(**q).vertices).abs().max().item()
            reps = 200 if B == 1 else 40
            # interleave to share machine noise
            t_ours, t_peer = [], []
            for _ in range(3):
                t_ours.append(timeit(lambda: ours(**p), reps)); t_peer.append(timeit(lambda: peer(**q), reps))
        to, tp = min(t_ours), min(t_peer)
        print(f"flame_headbook_b{B}: {to:.3f} ms")
        print(f"flame_smplx_b{B}: {tp:.3f} ms")
        print(f"flame_speedup_vs_smplx_b{B}: {tp / to:.2f} x")
        print(f"flame_max_vertex_diff_b{B}: {err:.2e} m")
    # memory-bound limit at batch 1: read the stacked blend matrix once
    nbytes = ours.blend.numel() * ours.blend.element_size()
    big = torch.randn(64 * 1024 * 1024 // 4 * 4)  # 256 MB
    t = timeit(lambda: big.sum(), 10, warm=2) / 1e3
    bw = big.numel() * 4 / t
    lim = nbytes / bw * 1e3
    print(f"blend_matrix_size: {nbytes / 1e6:.1f} MB")
    print(f"stream_bandwidth: {bw / 1e9:.1f} GB/s")
    print(f"flame_memory_bound_limit_b1: {lim:.3f} ms")


if __name__ == "__main__":
    main()
