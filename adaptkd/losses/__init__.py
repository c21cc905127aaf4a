"""Pure loss functions: tensors in, tensors out (no state, no config, no nn.Module).

Convention: sum over classes (or channels), mean over the batch, computed in the input's dtype.
"""

from adaptkd.losses.logits import dkd_loss, kd_loss

__all__ = ["kd_loss", "dkd_loss"]
