"""adaptkd model zoo: CIFAR KD architectures, small ViTs, and small nets for the bundled data.

    from adaptkd.models import build_model, list_models, register_model
    model = build_model("resnet8x4", num_classes=100)
    model.tap_blocks, model.head_name, model.feature_dim

See docs/models.md for the table of models, parameter counts and what each tap gives.
"""

# Importing the zoo modules registers their builders.
from . import mobilenet, resnet, shufflenet, small, vgg, vit, wrn  # noqa: E402,F401
from .external import build_timm, build_torchvision  # noqa: E402
from .hf import build_hf  # noqa: E402
from .inputs import InputSpec, InputView  # noqa: E402
from .registry import build_model, list_models, model_exists, namespace_of, register_model, register_model_namespace

# Other libraries' models (imported lazily by their builders): hf:, timm:, torchvision:
register_model_namespace("hf", build_hf)
register_model_namespace("timm", build_timm)
register_model_namespace("torchvision", build_torchvision)

__all__ = ["build_model", "list_models", "model_exists", "namespace_of", "register_model", "register_model_namespace",
           "InputSpec", "InputView"]
