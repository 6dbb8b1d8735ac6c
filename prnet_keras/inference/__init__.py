"""prnet_keras.inference: images -> faces -> meshes, landmarks, pose, depth, texture, files.

    from prnet_keras.inference import Predictor
    predictor = Predictor.from_path("run/model.keras")      # or Predictor(network_or_callable, layout)
    faces = predictor.predict("photo.jpg")                  # MTCNN by default
    faces[0].vertices, faces[0].keypoints, faces[0].pose.angles_deg
"""

from prnet_keras.inference.detect import Detection, crop_square, get_detector
from prnet_keras.inference.images import decode_image, load_image, to_rgb_uint8
from prnet_keras.inference.postprocess import Face, FacePose, estimate_pose, face_from_position_map
from prnet_keras.inference.predictor import Predictor

__all__ = [
    "Detection", "Face", "FacePose", "Predictor", "crop_square", "decode_image", "estimate_pose",
    "face_from_position_map", "get_detector", "load_image", "to_rgb_uint8",
]
