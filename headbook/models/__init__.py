"Head models: the FLAME layer and its sources (FLAME files, ICT-FaceKit, the built-in synthhead)."
from headbook.models.flame import FLAME, FLAMEOutput, HeadModelData
from headbook.models.registry import load_head_model

__all__ = ["FLAME", "FLAMEOutput", "HeadModelData", "load_head_model"]
