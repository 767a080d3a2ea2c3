"""Seconds per scan for the whole NoW protocol (crop, Procrustes, refinement, distances) on CPU.

A 100k-vertex synthetic head scan (a bumpy ellipsoid, millimetres) against a 5k-vertex prediction of the same
surface under a random similarity transform (metres) with 0.5 mm of noise on the scan.
Run: python benchmarks/now_protocol.py
"""
import time
import numpy as np
import trimesh
from scipy.spatial.transform import Rotation
from headbook.eval.now import now_scan_to_mesh, crop_face, Similarity
from headbook.eval.distance import TriangleIndex


def head(count):
    m = trimesh.creation.uv_sphere(radius=1.0, count=[count, count])
    v = np.asarray(m.vertices)
    th, ph = np.arccos(np.clip(v[:, 1], -1, 1)), np.arctan2(v[:, 0], v[:, 2])
    r = 1 + 0.06 * np.sin(3 * th) * np.cos(2 * ph) + 0.03 * np.cos(5 * ph) * np.sin(th) ** 2
    return v * r[:, None] * np.array([75.0, 95.0, 90.0]), np.asarray(m.faces)


def landmarks(v):
    targets = np.array([[-45, 30], [-15, 30], [15, 30], [45, 30], [0, -5], [-25, -35], [25, -35]], float)
    front = np.nonzero(v[:, 2] > 0)[0]
    return np.array([v[front[np.argmin(np.linalg.norm(v[front, :2] - t, axis=1))]] for t in targets])


def main(repeats=3):
    g = np.random.default_rng(0)
    sv, sf = head(224)                       # ~100k vertices
    pv, pf = head(51)                        # ~5k vertices
    sv = sv + g.normal(scale=0.5, size=sv.shape)
    sl = landmarks(sv)
    pl = landmarks(pv)
    T = Similarity(1e-3, Rotation.random(random_state=1).as_matrix(), np.array([0.02, -0.1, 0.3]))
    crop = crop_face(sv, sl)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = now_scan_to_mesh(sv, sl, T(pv), pf, T(pl))
        times.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
    print(f"scan_vertices: {len(sv)} count")
    print(f"cropped_scan_vertices: {len(crop.vertex_ids)} count")
    print(f"prediction_vertices: {len(pv)} count")
    print(f"now_protocol_per_scan: {min(times):.2f} s")
    print(f"now_protocol_cpu_per_scan: {min(cpu):.2f} s")   # all threads' CPU time; wall time suffers on a busy machine
    print(f"now_median_error: {np.median(res.distances):.3f} mm")
    P = sv[crop.vertex_ids][:50_000]
    idx = TriangleIndex(res.aligned_verts, pf)
    t0 = time.perf_counter(); idx.query(P); t1 = time.perf_counter()
    print(f"index_query_50k_points: {t1 - t0:.2f} s")
    m = trimesh.Trimesh(res.aligned_verts, pf, process=False)
    t0 = time.perf_counter(); trimesh.proximity.closest_point(m, P); t1 = time.perf_counter()
    print(f"trimesh_closest_point_50k_points: {t1 - t0:.2f} s")


if __name__ == "__main__":
    main()
