"""Range of the face finder (`landmarks.detect_faces`): the smallest face and the largest yaw it handles.
Run: python benchmarks/detect_range.py  (the yaw part needs ICT-FaceKit, e.g. ../shared/ict-facekit; prints
`name: value unit`).

Small faces: two public-domain photos that installed packages ship (matplotlib's Grace Hopper, scikit-image's
astronaut Eileen Collins) are shrunk and pasted off-centre into a 1400x1024 grey canvas, both in the same picture
(a 'group'). The reference is each photo's own landmarks, found at full size and scaled into the canvas; the error
is the mean distance of the 68 iBUG points / the outer-eye-corner distance (NME). Face width = width of the
478-point box. Yaw: the ICT-FaceKit head rendered by `benchmarks/landmarks.py`'s `render_ict_view` (512x512) at
yaws 0-90 deg; error of the inner 51 points (brows, nose, eyes, mouth) against ICT's annotated vertices."""
import sys, time
import numpy as np
from PIL import Image

CANVAS = (1024, 1400)   # H, W
WIDTHS = (160, 120, 90, 60, 45, 40, 30, 25, 20, 16, 12)   # target width of the 478-point box, pixels
YAWS = tuple(range(0, 91, 10))


def sample_photos():
    "[(name, rgb uint8)]: the two public-domain photos."
    from matplotlib import cbook
    import skimage.data
    grace = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    return [("grace_hopper", grace), ("astronaut", skimage.data.astronaut())]


def paste(canvas, rgb, scale, x, y):
    "Paste `rgb` shrunk by `scale` with its top-left corner at (x, y); returns the pasted size."
    h, w = max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale))
    canvas[y:y + h, x:x + w] = np.asarray(Image.fromarray(rgb).resize((w, h), Image.LANCZOS))


def small_faces():
    from headbook.landmarks import detect_faces, NoFaceError
    photos = sample_photos()
    ref = [detect_faces(rgb)[0] for _, rgb in photos]            # full-size landmarks
    width0 = [float(r.box[2] - r.box[0]) for r in ref]
    corners = [(0.72, 0.62), (0.12, 0.15)]                        # off-centre: bottom right, top left
    print("width_px " + " ".join(f"{n}_found {n}_nme" for n, _ in photos) + " seconds")
    rows = []
    for w in WIDTHS:
        can = np.full(CANVAS + (3,), 110, np.uint8)
        truth = []
        for (n, rgb), r, w0, (fx, fy) in zip(photos, ref, width0, corners):
            s = w / w0
            x = min(int(fx * CANVAS[1]), CANVAS[1] - round(rgb.shape[1] * s))
            y = min(int(fy * CANVAS[0]), CANVAS[0] - round(rgb.shape[0] * s))
            paste(can, rgb, s, x, y)
            truth.append(r.ibug68 * s + [x, y])
        t0 = time.perf_counter()
        try: found = detect_faces(can)
        except NoFaceError: found = []
        dt = time.perf_counter() - t0
        cells = []
        for gt in truth:
            iod = np.linalg.norm(gt[36] - gt[45])
            errs = [np.linalg.norm(f.ibug68 - gt, axis=1).mean() / iod for f in found]
            e = min(errs) if errs else np.inf
            cells.append((e < 0.5, e))
        rows.append((w, cells))
        print(f"{w} " + " ".join(f"{int(ok)} {e:.3f}" for ok, e in cells) + f" {dt:.2f}")
    good = [w for w, cells in rows if all(ok and e < 0.1 for ok, e in cells)]
    print(f"smallest_face_nme_below_0.1: {min(good) if good else 'none'} px")


def yaws():
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from landmarks import render_ict_view
    from headbook.landmarks import detect_faces, NoFaceError
    from headbook.models.ict import find_ict
    try: find_ict()
    except FileNotFoundError as e: print(f"yaw part skipped: {e}"); return
    rng = np.random.default_rng(0)
    ids = [np.zeros(100)] + [rng.standard_normal(100) for _ in range(4)]
    print("yaw_deg found_of_5 nme_inner51")
    ok_yaws = []
    for yaw in YAWS:
        errs, n = [], 0
        for sh in ids:
            v = render_ict_view(sh, yaw)
            try: f = detect_faces(v.image)[0]
            except NoFaceError: continue
            n += 1
            errs.append(np.linalg.norm(f.ibug68[17:] - v.gt68[17:], axis=1).mean()
                        / np.linalg.norm(v.gt68[36] - v.gt68[45]))
        e = float(np.mean(errs)) if errs else np.inf
        print(f"{yaw} {n} {e:.3f}")
        if n == len(ids) and e < 0.15: ok_yaws.append(yaw)
    print(f"largest_yaw_all_found_nme_below_0.15: {max(ok_yaws) if ok_yaws else 'none'} deg")


if __name__ == "__main__":
    small_faces()
    yaws()
