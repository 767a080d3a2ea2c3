"""Landmarks benchmark: error of the detector + MP478_TO_IBUG68 map against ICT-FaceKit's annotated 68 vertices,
and detector speed. Run: python benchmarks/landmarks.py  (needs ICT-FaceKit, found by `headbook.models.ict.find_ict`,
e.g. ../shared/ict-facekit; prints `name: value unit`).

The pictures are the book's own: the ICT head from `load_head_model("ict")` (face, head/neck and both eyeballs),
posed by the FLAME layer, drawn by `render.mesh.render_mesh` under a pinhole camera and a directional SH light, with
skin-coloured per-vertex albedo and painted irises and pupils on the eyeballs (MediaPipe needs to see irises).
`render_ict_view` is imported by tests/test_landmarks.py."""
import sys, time
from dataclasses import dataclass
from functools import lru_cache
import numpy as np
import torch

from headbook.geometry.cameras import intrinsics, look_at, project_points
from headbook.render.lighting import directional_sh
from headbook.render.mesh import render_mesh

SKIN = (0.85, 0.62, 0.5)          # albedo of the skin, RGB
SCLERA, IRIS, PUPIL = (0.9, 0.9, 0.9), (0.35, 0.25, 0.2), (0.05, 0.05, 0.05)
IRIS_R, PUPIL_R = 0.0055, 0.0025  # metres from the front of the eyeball
BACKGROUND = 90 / 255
YAWS = (-20, -10, 0, 10, 20)      # degrees
HELD_OUT = range(10, 20)          # identities 0-9 were used to choose the map's contour vertices (25_landmarks.conventions)


@lru_cache(maxsize=1)
def ict_head():
    "The ICT FLAME layer and its per-vertex albedo [V, 3]; raises FileNotFoundError (saying where it looked) without ICT."
    from headbook.models import load_head_model
    model = load_head_model("ict")
    return model, ict_albedo(model.data)


def ict_albedo(data) -> torch.Tensor:  # [V, 3]
    "Skin everywhere, and on each eyeball a white sclera, a brown iris and a black pupil round its front point."
    from headbook.models.ict import ICT_GEOMETRY
    ids, v = data.extras["ict_vertex_ids"], np.asarray(data.v_template, np.float64)
    alb = np.tile(np.array(SKIN), (len(ids), 1))
    for eye in ("eyeball_left", "eyeball_right"):
        a, b = ICT_GEOMETRY[eye][:2]
        ball = np.flatnonzero((ids >= a) & (ids <= b))
        if len(ball) == 0: raise ValueError(f"the ICT subset has no {eye}: load it with subset='default'")
        front = v[ball[np.argmax(v[ball, 2])]]             # the eyes look along +Z at rest
        d = np.linalg.norm(v[ball] - front, axis=1)
        alb[ball] = SCLERA
        alb[ball[d < IRIS_R]] = IRIS
        alb[ball[d < PUPIL_R]] = PUPIL
    return torch.tensor(alb, dtype=torch.float32)


@dataclass
class ICTView:
    "One benchmark picture and its ground truth (pixels, centres at +0.5, in the returned image)."
    image: np.ndarray      # [H, W, 3] uint8
    gt68: np.ndarray       # [68, 2] pixels: ICT's annotated 68 vertices, projected
    dynamic68: np.ndarray  # [68, 2] pixels: the model's own landmarks (contour 0-16 on the silhouette for this yaw)


def render_ict_view(shape: np.ndarray,  # [S] ICT identity coefficients (1 = one standard deviation)
                    yaw: float = 0.0,   # degrees, about +Y (positive turns the face to the subject's left)
                    size: int = 512, focal: float = 1100.0, distance: float = 0.6, supersample: int = 2,
                   ) -> ICTView:
    "The ICT identity turned by `yaw`, seen from `distance` metres in front of its 68-landmark centroid."
    model, albedo = ict_head()
    with torch.no_grad():
        shape = torch.as_tensor(np.asarray(shape), dtype=torch.float32).reshape(-1)
        if len(shape) > model.n_shape: raise ValueError(f"shape must have at most {model.n_shape} coefficients, got {len(shape)}")
        s = torch.zeros(1, model.n_shape)
        s[0, :len(shape)] = shape
        pose = torch.tensor([[0.0, np.radians(yaw), 0.0]])
        out = model(shape=s, global_pose=pose)
        verts = out.vertices.double()                                         # [1, V, 3]
        lmk_ids = torch.as_tensor(model.data.extras["landmark_vertex_ids"])   # ICT's 68 (= landmarks.ICT_IBUG68_VERTICES)
        gt3 = verts[:, lmk_ids]                                               # [1, 68, 3] ICT's annotated vertices
        c = gt3.mean(1)                                                       # [1, 3]
        R, t = look_at(c + torch.tensor([[0.0, 0.0, distance]], dtype=c.dtype), c)
        big = size * supersample
        r = render_mesh(verts.float(), model.faces, intrinsics(focal * supersample, (big, big)), R.float(), t.float(),
                        (big, big), albedo=albedo[None],
                        sh=directional_sh(torch.tensor([[0.3, 0.4, 1.0]]), color=0.75, ambient=0.25))
        img = r.image * r.mask + BACKGROUND * (1 - r.mask)                    # [1, 3, big, big]
        img = torch.nn.functional.avg_pool2d(img, supersample)[0].permute(1, 2, 0)
        K = intrinsics(focal, (size, size), dtype=torch.float64)
        gt, _ = project_points(gt3, K, R, t)
        dyn, _ = project_points(out.landmarks.double(), K, R, t)
    return ICTView((img.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), gt[0].numpy(), dyn[0].numpy())


def main():
    from headbook.landmarks import detect_face_mesh, IBUG68_REGIONS, NoFaceError
    from headbook.models.ict import find_ict
    try: find_ict()
    except FileNotFoundError as e: sys.exit(str(e))
    rng = np.random.default_rng(0)
    coefs = rng.standard_normal((20, 100)); coefs[0] = 0
    err, dyn, times, miss = {y: [] for y in YAWS}, [], [], 0
    t_render = []
    for k in HELD_OUT:
        for y in YAWS:
            t0 = time.perf_counter(); v = render_ict_view(coefs[k], y); t_render.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            try: r = detect_face_mesh(v.image)
            except NoFaceError: miss += 1; continue
            times.append(time.perf_counter() - t0)
            scale = np.linalg.norm(v.gt68[36] - v.gt68[45])
            err[y].append(np.linalg.norm(r.ibug68 - v.gt68, axis=1) / scale)
            dyn.append(np.linalg.norm(r.ibug68[:17] - v.dynamic68[:17], axis=1) / scale)
    allerr = np.concatenate([np.stack(v) for v in err.values()])
    print(f"ict_missed_detections: {miss} images")
    print(f"ict_nme_all68: {allerr.mean():.4f} IOD")
    for name, sl in IBUG68_REGIONS.items(): print(f"ict_nme_{name}: {allerr[:, sl].mean():.4f} IOD")
    print(f"ict_nme_inner51: {allerr[:, 17:].mean():.4f} IOD")
    print(f"ict_nme_now7: {allerr[:, [36, 39, 42, 45, 33, 48, 54]].mean():.4f} IOD")
    for y in YAWS:
        e = np.stack(err[y]); print(f"ict_nme_yaw{y:+d}: {e.mean():.4f} IOD (contour {e[:, :17].mean():.4f}, inner51 {e[:, 17:].mean():.4f})")
    print(f"ict_nme_contour_vs_model_dynamic: {np.stack(dyn).mean():.4f} IOD")
    print(f"render_time_512px: {1000 * np.median(t_render):.0f} ms")
    print(f"detect_time_512px: {1000 * np.median(times):.1f} ms")


if __name__ == "__main__":
    main()
