"""Photometric fitting speed on this machine's CPU at 224 px with synthhead (5.6k vertices).

Run: python benchmarks/fit_photometric.py [--quick]
Prints one `name: value unit` line per figure. Threads: torch's default (set OMP_NUM_THREADS to pin).
"""
import sys
import time
from dataclasses import replace

import torch

from headbook.fit import PRESETS, fit_photometric
from headbook.fit.photometric import synthetic_scene
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


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
