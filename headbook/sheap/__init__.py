"SHeaP: single image -> FLAME parameters, trained self-supervised through 2D Gaussians (Schoneveld et al., ICCV 2025)."
from headbook.sheap.model import SHeaP, SHeaPModelConfig, SeedSHeaP, load_sheap_model, sheap_camera, PARAM_KEYS

__all__ = ["SHeaP", "SHeaPModelConfig", "SeedSHeaP", "load_sheap_model", "sheap_camera", "PARAM_KEYS"]
