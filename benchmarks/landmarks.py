"""Landmarks benchmark: error of the detector + MP478_TO_IBUG68 map against ICT-FaceKit's annotated 68 vertices,
and detector speed. Run: python benchmarks/landmarks.py  (needs ../shared/ict-facekit; prints `name: value unit`).

The ICT head is drawn with a small painter's-algorithm renderer (OpenCV polygon fill, flat Lambert shading, painted
irises) so that this measurement does not depend on the book's renderer; ~0.15 s per 512x512 image on one core."""
import os, sys, time
from pathlib import Path
import numpy as np

ICT = Path(os.environ.get("HEADBOOK_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "ict-facekit" / "ict_facekit_light.npz"

def load_ict(path=ICT):
    d = np.load(path)
    P = d["polygons"]
    Q = P[np.r_[0:11144, 21496:24692]]                     # face, head+neck, both eyeballs (ICT README ranges)
    F = np.concatenate([Q[:, [0, 1, 2]], Q[Q[:, 3] >= 0][:, [0, 2, 3]]])  # quads (and a few triangles, -1 padded)
    return d["neutral"].astype(np.float64) / 100.0, d["identity_deltas"].astype(np.float64) / 100.0, F

def render_ict(V, F, yaw_deg=0.0, size=512, focal=1100.0, dist=0.6, ss=2):
    "uint8 [size, size, 3] image of the ICT head, and the projected 68 landmarks [68, 2] in pixels."
    import cv2
    from headbook.landmarks.conventions import ICT_IBUG68_VERTICES as LM
    a = np.deg2rad(yaw_deg)
    Ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    v = (V - V[LM].mean(0)) @ Ry.T
    Xc = np.stack([v[:, 0], -v[:, 1], dist - v[:, 2]], 1)   # camera on +Z looking at the face (OpenCV axes)
    uv = focal * Xc[:, :2] / Xc[:, 2:] + size / 2
    tri = v[F]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]); n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    L = np.array([0.3, 0.4, 1.0]); L /= np.linalg.norm(L)
    alb = np.tile([0.85, 0.62, 0.5], (len(F), 1))
    for lo, hi in [(21451, 23021), (23021, 24591)]:            # eyeballs: white sclera, brown iris, black pupil
        ball = (F[:, 0] >= lo) & (F[:, 0] < hi)
        front = v[lo + np.argmax(v[lo:hi, 2])]
        dd = np.linalg.norm(v[F[:, 0]] - front, axis=1)
        alb[ball] = 0.9; alb[ball & (dd < 0.0055)] = [0.35, 0.25, 0.2]; alb[ball & (dd < 0.0025)] = 0.05
    col = alb * (np.clip(n @ L, 0, 1) * 0.75 + 0.25)[:, None] * 255
    img = np.full((size * ss, size * ss, 3), 90, np.uint8)
    pts = np.round(uv[F] * ss * 16).astype(np.int32)
    for i in np.argsort(-Xc[F].mean(1)[:, 2]):                 # far to near
        if n[i, 2] > -0.2: cv2.fillConvexPoly(img, pts[i], col[i].tolist(), lineType=cv2.LINE_8, shift=4)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA), uv[LM]

def main():
    from headbook.landmarks import detect_face_mesh, IBUG68_REGIONS, NoFaceError
    if not ICT.exists(): sys.exit(f"needs ICT-FaceKit at {ICT} (set HEADBOOK_SHARED)")
    V0, D, F = load_ict()
    rng = np.random.default_rng(0)
    coefs = rng.standard_normal((20, 100)); coefs[0] = 0
    yaws = [-20, -10, 0, 10, 20]
    err, times, miss = {y: [] for y in yaws}, [], 0
    for k in range(10, 20):                     # identities 0-9 were used to choose the contour vertices
        V = V0 + np.tensordot(coefs[k], D, 1)
        for y in yaws:
            img, gt = render_ict(V, F, y)
            t0 = time.perf_counter()
            try: r = detect_face_mesh(img)
            except NoFaceError: miss += 1; continue
            times.append(time.perf_counter() - t0)
            e = np.linalg.norm(r.ibug68 - gt, axis=1) / np.linalg.norm(gt[36] - gt[45])
            err[y].append(e)
    allerr = np.concatenate([np.stack(v) for v in err.values()])
    print(f"ict_missed_detections: {miss} images")
    print(f"ict_nme_all68: {allerr.mean():.4f} IOD")
    for name, sl in IBUG68_REGIONS.items(): print(f"ict_nme_{name}: {allerr[:, sl].mean():.4f} IOD")
    print(f"ict_nme_inner51: {allerr[:, 17:].mean():.4f} IOD")
    print(f"ict_nme_now7: {allerr[:, [36, 39, 42, 45, 33, 48, 54]].mean():.4f} IOD")
    for y in yaws:
        e = np.stack(err[y]); print(f"ict_nme_yaw{y:+d}: {e.mean():.4f} IOD (contour {e[:, :17].mean():.4f}, inner51 {e[:, 17:].mean():.4f})")
    print(f"detect_time_512px: {1000 * np.median(times):.1f} ms")

if __name__ == "__main__":
    main()
