"TEMPEH: calibrated multi-view images -> a head mesh in a fixed topology (coarse volume + spatial transformer, surface-aware refinement)."
