"Evaluation: exact point-to-surface distance, the NoW protocol, NPHM's surface metrics."
# Hand-written re-exports (nbdev does not overwrite an existing __init__.py).
# NoW's file layout (image lists, .pp files, predictions, result files, `evaluate_now`): `headbook.data.now`.
from headbook.eval.distance import (ClosestPoints, TriangleIndex, closest_point_on_triangle,
                                    closest_points_brute_force, point_to_mesh_distance,
                                    point_to_mesh_distance_torch)
from headbook.eval.now import (NOW_CHALLENGES, NOW_FROM_IBUG68, NOW_LANDMARK_NAMES, NowResult, NowStats,
                               crop_face, cumulative_error, now_result, now_scan_to_mesh, refine_alignment)
from headbook.geometry.procrustes import Similarity, procrustes   # re-exported: the NoW protocol's step 2
