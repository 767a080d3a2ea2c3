"Image metrics: PSNR (inf for identical images, not capped), SSIM (1 for identical, < 1 for noise), mask IoU, bad inputs."
import math
import pytest
import torch
from headbook.eval.image import psnr, ssim, ssim_map, mask_iou


def test_psnr_identical_is_inf_and_known_value():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(psnr(x, x)).all() and psnr(x, x).shape == (3,)
    y = (x + 0.01).clamp(0, 1)
    mse = (x - y).pow(2).mean((1, 2, 3))
    assert torch.allclose(psnr(x, y), 10 * torch.log10(1 / mse))
    assert torch.allclose(psnr(255 * x, 255 * y, max_val=255.0), psnr(x, y), atol=1e-4)


def test_psnr_mask_counts_only_the_masked_pixels():
    x, y = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    y[..., :, 4:] = 1.0
    m = torch.zeros(1, 1, 8, 8); m[..., :, :4] = 1
    assert torch.isinf(psnr(x, y, m)).all()
    m[..., 0, 4] = 1                                   # one wrong pixel out of 33
    assert psnr(x, y, m).item() == pytest.approx(10 * math.log10(33))


def test_ssim_identical_one_noise_below():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ssim(x, noisy) < 0.9).all()
    assert ssim_map(x, noisy).shape == (2, 1, 32, 32)


def test_mask_iou():
    a = torch.zeros(2, 1, 4, 4); b = torch.zeros(2, 1, 4, 4)
    a[0, :, :2] = 1; b[0, :, :, :2] = 1                # 4 shared pixels of 12
    assert mask_iou(a, b)[0].item() == pytest.approx(4 / 12)
    assert mask_iou(a, b)[1].item() == 1.0              # both empty
    assert mask_iou(a, a)[0].item() == 1.0
    assert mask_iou(0.4 * a, a)[0].item() == 0.0        # soft masks are thresholded at 0.5


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_bad_inputs_name_the_argument(fn):
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"): fn(x, x[:, :2])
    with pytest.raises(ValueError, match="x must have shape"): fn(x[0], x[0])
    with pytest.raises(TypeError, match="x must be a float tensor"): fn((x * 255).byte(), (x * 255).byte())
    with pytest.raises(TypeError, match="torch.Tensor"): fn(x.numpy(), x)


def test_mask_iou_bad_inputs():
    with pytest.raises(ValueError, match="a must have shape"): mask_iou(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="b must have the shape"): mask_iou(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
