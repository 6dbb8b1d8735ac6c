"""prnet_keras.edit: texture editing and face swapping on reconstructed faces.

    from prnet_keras.edit import replace_region, swap_faces, uv_region_mask
    result = swap_faces("a.jpg", "b.jpg", predictor)             # B's face onto A's largest face
    result = replace_region("a.jpg", "b.jpg", predictor, "eyes")  # only the eyes
    result = swap_faces("group.jpg", None, predictor)             # the two largest faces trade places

Imports: geometry and inference (Predictor, Face); used by the server and the CLIs.
"""

from prnet_keras.edit.blend import BLENDS, blend
from prnet_keras.edit.regions import REGIONS, uv_region_mask
from prnet_keras.edit.swap import (
    EditResult, apply_swap, edit_texture, face_order, plan_swap, replace_region, select_faces, swap_faces,
)
from prnet_keras.edit.texture import (
    color_transfer, complete_texture, diffuse_fill, face_texture, fill_hidden, lab_statistics, render_texture,
)

__all__ = [
    "BLENDS", "EditResult", "REGIONS", "apply_swap", "blend", "color_transfer", "complete_texture", "diffuse_fill",
    "edit_texture", "face_order", "face_texture", "fill_hidden", "lab_statistics", "plan_swap", "render_texture",
    "replace_region", "select_faces", "swap_faces", "uv_region_mask",
]
