"""Pure loss functions: tensors in, tensors out (no state, no config, no nn.Module).

Convention: sum over classes (or channels), mean over the batch, computed in the input's dtype.
"""

from adaptkd.losses.features import (
    afd_loss,
    attention_map_distances,
    hint_loss,
    rtk_influence,
    rtk_loss,
    select_keys,
    spatial_attention,
)
from adaptkd.losses.logits import (
    DTKDParts,
    dkd_loss,
    dtkd_guarded,
    dtkd_loss,
    dtkd_loss_parts,
    dtkd_sharpness,
    dtkd_temperatures,
    kd_loss,
)
from adaptkd.losses.online import (
    SwitOKDDecision,
    distillation_gap,
    label_distance,
    online_kl_loss,
    switokd_decision,
    switokd_mode,
    switokd_threshold,
)
from adaptkd.losses.tokens import standardize, teacher_drop_weights, unic_token_loss

__all__ = [
    # logits
    "kd_loss", "dkd_loss", "dtkd_temperatures", "dtkd_loss", "dtkd_loss_parts", "dtkd_guarded", "dtkd_sharpness",
    "DTKDParts",
    # online
    "switokd_decision", "switokd_mode", "switokd_threshold", "label_distance", "distillation_gap", "online_kl_loss",
    "SwitOKDDecision",
    # features
    "spatial_attention", "attention_map_distances", "afd_loss", "rtk_influence", "select_keys", "rtk_loss", "hint_loss",
    # tokens
    "unic_token_loss", "teacher_drop_weights", "standardize",
]
