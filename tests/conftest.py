import os
from pathlib import Path
import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def random_head_data(V_sub=2, S=12, E=6, seed=0, eyelids=True):
    "A small random FLAME-layout model on an icosphere (for tests that need any head model)."
    import trimesh
    from headbook.models.flame import HeadModelData
    from headbook.models.embeddings import dynamic_contour_embedding, closest_point_embedding
    rng = np.random.default_rng(seed)
    ico = trimesh.creation.icosphere(subdivisions=V_sub, radius=0.08)
    v = np.asarray(ico.vertices, np.float32); f = np.asarray(ico.faces, np.int64); V = len(v)
    J_reg = np.zeros((5, V), np.float32)
    for j in range(5):
        idx = rng.choice(V, 6, replace=False); J_reg[j, idx] = rng.dirichlet(np.ones(6))
    w = rng.random((V, 5)).astype(np.float32) ** 3; w /= w.sum(1, keepdims=True)
    lmk_pts = v[rng.choice(V, 51, replace=False)] * 1.0
    sfi, sbc = closest_point_embedding(v, f, lmk_pts)
    # contour bands: 17 rings of vertices sorted by z at different heights
    cands = []
    for k in range(17):
        side = -1 if k < 8 else (1 if k > 8 else 0)
        cand = np.where((np.sign(v[:, 0]) == side) | (side == 0))[0][:5] if side else np.array([int(np.argmin(v[:, 1]))])
        cands.append(cand)
    dfi, dbc = dynamic_contour_embedding(v, f, cands)
    return HeadModelData(v_template=v, faces=f,
                         shapedirs=(rng.standard_normal((V, 3, S)) * 3e-3).astype(np.float32),
                         exprdirs=(rng.standard_normal((V, 3, E)) * 3e-3).astype(np.float32),
                         posedirs=(rng.standard_normal((V, 3, 36)) * 1e-3).astype(np.float32),
                         J_regressor=J_reg, weights=w, parents=np.array([-1, 0, 1, 1, 1]),
                         static_lmk_faces_idx=sfi, static_lmk_bary=sbc, dynamic_lmk_faces_idx=dfi, dynamic_lmk_bary=dbc,
                         eyelid_dirs=(rng.standard_normal((V, 3, 2)) * 1e-3).astype(np.float32) if eyelids else None,
                         name="random")


@pytest.fixture(scope="session")
def random_data():
    return random_head_data()


def need_shared():
    if not (SHARED / "ict-facekit" / "ict_facekit_light.npz").exists():
        pytest.skip(f"../shared/ict-facekit not found at {SHARED} (CI provides it beside the clone)")
