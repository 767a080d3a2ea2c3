"Data: synthetic writers that emit the real layouts (NoW, ...) and readers of those layouts."
# Hand-written re-exports (nbdev does not overwrite an existing __init__.py).
from headbook.data.now import (SyntheticNowSummary, densify_scan, mean_head_predictions, oracle_predictions,
                               paint_occluder, skin_faces, write_synthetic_now,
                               NowImage, read_now_split, find_prediction, read_pp, write_pp, read_landmarks,
                               read_mesh, write_prediction, evaluate_now, write_now_results)
