"""Write data/photos/: photos with small, off-centre faces and a two-person 'group', composited from two
public-domain photos that installed packages ship (matplotlib's Grace Hopper, scikit-image's astronaut Eileen
Collins). Run: python tools/make_sample_photos.py  (deterministic; see data/photos/README.md)."""
from pathlib import Path
import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "data" / "photos"


def sources():
    from matplotlib import cbook
    import skimage.data
    grace = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return grace, Image.fromarray(skimage.data.astronaut())


def backdrop(H, W, seed):
    "A soft vertical gradient with film-grain noise: a plain wall behind the people."
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, H)[:, None, None]
    img = (1 - t) * np.array([150, 160, 170]) + t * np.array([95, 90, 85]) + rng.normal(0, 1.5, (H, W, 3))
    return img.clip(0, 255).astype(np.uint8)


def paste(canvas, im, width, x, y):
    "Paste `im` resized to `width` pixels wide with its top-left corner at (x, y)."
    h = round(im.height * width / im.width)
    canvas[y:y + h, x:x + width] = np.asarray(im.resize((width, h), Image.LANCZOS))


def main():
    grace, astro = sources()
    OUT.mkdir(parents=True, exist_ok=True)
    small = backdrop(960, 1280, 0)
    paste(small, grace, 190, 960, 560)          # face about 75 px wide, bottom right
    Image.fromarray(small).save(OUT / "small_face.jpg", quality=85)
    group = backdrop(1000, 1400, 1)
    paste(group, grace, 260, 820, 430)          # face about 100 px wide, right of centre
    paste(group, astro, 300, 250, 180)          # face about 60 px wide, top left
    Image.fromarray(group).save(OUT / "group.jpg", quality=85)
    print("wrote", *sorted(p.name for p in OUT.glob("*.jpg")))


if __name__ == "__main__":
    main()
