"Shared by the benchmark scripts (run as `python benchmarks/NAME.py`, so this folder is on the path)."
import time

import torch


def best_seconds(fn, n=3, budget_s=30.0, warmup=True):
    "Best wall time in seconds over up to n calls; stops early once budget_s is spent (at least one call)."
    if warmup: fn()
    best, spent = float("inf"), 0.0
    for _ in range(n):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        t = time.perf_counter(); fn()
        if torch.cuda.is_available(): torch.cuda.synchronize()
        dt = time.perf_counter() - t; best = min(best, dt); spent += dt
        if spent > budget_s: break
    return best
