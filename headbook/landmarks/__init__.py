"Offline landmarks: MediaPipe face mesh detection and the 478 / 68 / 7 landmark conventions."
from .conventions import (MP478_TO_IBUG68, IBUG68_TO_NOW7, MP478_TO_NOW7, NOW7_NAMES, IBUG68_REGIONS,
                          IBUG68_MIRROR, ICT_IBUG68_VERTICES, to_ibug68, to_now7, skin_mask)
from .detect import (ImageError, NoFaceError, LoadedImage, read_image, load_image, FaceMeshResult,
                     detect_face_mesh, detect_faces, detect_face_boxes, detect_landmarks68, BatchItem, detect_batch)
