"SHeaP: single image -> FLAME parameters, trained self-supervised through 2D Gaussians."
