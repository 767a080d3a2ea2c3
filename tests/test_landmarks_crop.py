"The one face crop: box rule, round trip photo -> crop -> photo, the tensor crop, jittered boxes, bad inputs."
import numpy as np
import pytest
import torch
from headbook.landmarks.crop import (CropTransform, crop_boxes, crop_square, crop_tensor, face_crop, landmark_box,
                                     square_box, warp_to_crop, warp_to_photo)


@pytest.mark.parametrize("seed", range(5))
def test_landmarks_round_trip_photo_crop_photo(seed):
    rng = np.random.default_rng(seed)
    l = rng.uniform([50, 40], [600, 450], (68, 2))
    for size, expand in ((224, 1.25), (64, 2.0), (513, 1.0)):
        T = face_crop(l, size, expand)
        assert np.abs(T.to_photo(T.to_crop(l)) - l).max() < 1e-9
        c = T.to_crop(l)                                 # the landmarks' box is centred, its longer side size / expand
        lo, hi = c.min(0), c.max(0)
        assert np.allclose((lo + hi) / 2, size / 2) and np.isclose((hi - lo).max(), size / expand)


def test_warps_put_a_photo_pixel_where_the_transform_says():
    photo = np.zeros((120, 160, 3), np.uint8); photo[60:64, 80:84] = 255          # a bright 4 px square at (82, 62)
    T = CropTransform(40.0, 20.0, 2.0, 128)
    crop = warp_to_crop(photo, T)
    w = crop[..., 0].astype(np.float64); yy, xx = np.mgrid[:128, :128] + 0.5
    centre = [(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()]      # the square's centroid in the crop
    assert np.allclose(T.to_photo(centre), [82, 62], atol=0.5)
    back = warp_to_photo(crop, T, photo.shape[:2])
    assert back.shape == photo.shape and back[61, 81, 0] > 200


def test_square_box_numpy_and_torch_agree():
    l = np.random.default_rng(0).uniform(0, 100, (3, 68, 2))
    cn, sn = square_box(*landmark_box(l), expand=1.25, face_fraction=0.8)
    ct, st = square_box(*landmark_box(torch.tensor(l)), expand=1.25, face_fraction=0.8)
    assert np.allclose(cn, ct.numpy()) and np.allclose(sn, st.numpy()) and sn.shape == (3,)


def test_crop_boxes_jitter_is_seeded_and_bounded():
    uv = torch.rand(4, 68, 2, generator=torch.Generator().manual_seed(0)) * 50 + 10
    b0 = crop_boxes(uv, 0.6)
    a = crop_boxes(uv, 0.6, 0.05, torch.Generator().manual_seed(1))
    assert torch.equal(a, crop_boxes(uv, 0.6, 0.05, torch.Generator().manual_seed(1)))
    assert ((a[:, 2] / b0[:, 2]).log().abs() <= 0.05 + 1e-6).all()
    assert ((a[:, :2] - b0[:, :2]).abs() <= 0.05 * a[:, 2:] + 1e-4).all()


def test_tensor_crop_identity_and_padding():
    x = torch.rand(3, 10, 10)
    assert torch.allclose(crop_tensor(x, 5, 5, 10, 10, antialias=False), x, atol=1e-6)
    z = crop_tensor(x, 0, 0, 10, 10, padding="zeros", antialias=False)
    assert (z[:, :4, :4] == 0).all()                                   # outside the photo: black
    e = crop_tensor(x, 0, 0, 10, 10, padding="border", antialias=False)
    assert torch.allclose(e[:, :5, :5], x[:, :1, :1].expand(3, 5, 5))   # outside: the edge repeats
    photo = (x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert torch.allclose(crop_square(photo, 5, 5, 10, 10), torch.from_numpy(photo).permute(2, 0, 1) / 255, atol=1e-6)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match=r"landmarks68 must have shape \[L, 2\]"): face_crop(np.zeros(68))
    with pytest.raises(ValueError, match="landmarks68 must have shape"): face_crop(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="NaN"): face_crop(np.full((68, 2), np.nan))
    with pytest.raises(ValueError, match="empty"): face_crop(np.ones((68, 2)))
    with pytest.raises(ValueError, match="size"): face_crop(np.random.rand(68, 2), size=0)
    with pytest.raises(ValueError, match="uv must have shape"): crop_boxes(torch.zeros(68, 2), 0.5)
    with pytest.raises(ValueError, match="x must have shape"): crop_tensor(torch.zeros(1, 3, 8, 8), 4, 4, 8, 8)
    with pytest.raises(ValueError, match="side must be positive"): crop_tensor(torch.zeros(3, 8, 8), 4, 4, 0, 8)
