"""Pure loss functions: tensors in, tensors out (no state, no config, no nn.Module).

Convention: sum over classes (or channels), mean over the batch, computed in the input's dtype.
"""

from adaptkd.losses.logits import dkd_loss, kd_loss
from adaptkd.losses.logits import DTKDParts, dtkd_guarded, dtkd_loss, dtkd_loss_parts, dtkd_sharpness, dtkd_temperatures

__all__ = ["kd_loss", "dkd_loss"]
__all__ += ["dtkd_temperatures", "dtkd_loss", "dtkd_loss_parts", "dtkd_guarded", "dtkd_sharpness", "DTKDParts"]
from adaptkd.losses.online import SwitOKDDecision, label_distance, distillation_gap, online_kl_loss, switokd_decision, switokd_mode, switokd_threshold  # noqa: E402,E501
__all__ += ["switokd_decision", "switokd_mode", "switokd_threshold", "label_distance", "distillation_gap", "online_kl_loss", "SwitOKDDecision"]
from adaptkd.losses.features import afd_loss, attention_map_distances, hint_loss, rtk_influence, rtk_loss, select_keys, spatial_attention  # noqa: E402,E501
__all__ += ["spatial_attention", "attention_map_distances", "afd_loss", "rtk_influence", "select_keys", "rtk_loss", "hint_loss"]
from adaptkd.losses.tokens import standardize, teacher_drop_weights, unic_token_loss  # noqa: E402
__all__ += ["unic_token_loss", "teacher_drop_weights", "standardize"]
