"Finding faces that are small in the frame or beside other faces: full-range detection over tiles, NMS, mesh on crops."
import numpy as np
import pytest
from PIL import Image
import matplotlib.cbook

from headbook.landmarks import detect_faces, detect_face_mesh, detect_face_boxes, NoFaceError
from headbook.landmarks.detect import detector_windows, box_nms
from headbook.models.assets import data_path, data_dir

GRACE = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


@pytest.fixture(scope="module")
def grace_full():
    return detect_face_mesh(GRACE)


def test_windows_cover_every_small_face():
    H, W, half = 1000, 1400, 160     # every 160-px square lies whole inside some 320-px tile
    w = detector_windows(H, W)
    tiles = w[w[:, 2] == 320]
    rng = np.random.default_rng(0)
    for x, y in rng.integers(0, [W - half, H - half], (200, 2)):
        inside = ((tiles[:, 0] <= x) & (tiles[:, 1] <= y)
                  & (tiles[:, 0] + 320 >= x + half) & (tiles[:, 1] + 320 >= y + half))
        assert inside.any(), (x, y)


def test_windows_bad_size():
    with pytest.raises(ValueError, match="H and W"):
        detector_windows(0, 10)


def test_nms_merges_duplicates_keeps_neighbours():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 8, 8], [20, 0, 30, 10]], float)
    keep = box_nms(boxes, np.array([0.8, 0.9, 0.5, 0.7]))
    assert keep.tolist() == [1, 3]     # the two overlapping and the one inside merge into the best; the neighbour stays
    with pytest.raises(ValueError, match="disagree"):
        box_nms(boxes, np.ones(3))


def _paste(canvas, rgb, scale, x, y):
    h, w = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
    canvas[y:y + h, x:x + w] = np.asarray(Image.fromarray(rgb).resize((w, h), Image.LANCZOS))


@pytest.mark.parametrize("width", [60, 40])
def test_small_off_centre_face_in_large_photo(grace_full, width):
    "A face `width` px wide in the corner of a 1600x1200 picture is found; its landmarks match the full-size ones."
    rgb = np.asarray(Image.open(GRACE).convert("RGB"))
    s = width / float(grace_full.box[2] - grace_full.box[0])
    can = np.full((1200, 1600, 3), 120, np.uint8)
    _paste(can, rgb, s, 1400, 1000)
    f = detect_face_mesh(can)
    gt = grace_full.ibug68 * s + [1400, 1000]
    nme = np.linalg.norm(f.ibug68 - gt, axis=1).mean() / np.linalg.norm(gt[36] - gt[45])
    assert abs(float(f.box[2] - f.box[0]) - width) < 0.15 * width and nme < 0.05, (f.box, nme)


def test_group_photo_all_faces_largest_first():
    faces = detect_faces(data_path("photos", "group.jpg"))
    assert len(faces) == 2
    w = [float(f.box[2] - f.box[0]) for f in faces]
    assert w[0] > w[1] > 40
    # the largest is the default
    assert np.array_equal(detect_face_mesh(data_path("photos", "group.jpg")).points, faces[0].points)
    # landmark points lie inside their own face box and the faces do not overlap
    for f in faces:
        assert (f.ibug68 >= f.box[:2] - 1).all() and (f.ibug68 <= f.box[2:] + 1).all()
    assert faces[0].box[0] > faces[1].box[2] or faces[1].box[0] > faces[0].box[2]


def test_boxes_without_tiles_miss_the_small_face():
    b_all, _ = detect_face_boxes(data_path("photos", "group.jpg"))
    b_whole, _ = detect_face_boxes(data_path("photos", "group.jpg"), tiles=False)
    assert len(b_all) >= 2 and len(b_whole) == 1


def test_no_face_in_noise():
    noise = np.random.default_rng(1).integers(0, 255, (700, 900, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError, match="no face found"):
        detect_faces(noise, name="noise.png")


def test_data_dir_and_missing_file(monkeypatch, tmp_path):
    assert (data_dir() / "README.md").is_file() and (data_dir() / "photos" / "README.md").is_file()
    monkeypatch.setenv("HEADBOOK_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="HEADBOOK_DATA"):
        data_path("landmarks", "mp478_to_ibug68.csv")
