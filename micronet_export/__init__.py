"""micronet-export: MicroNet M0–M3 from PyTorch to ONNX Runtime and TFLite, with parity checks."""

__version__ = "0.1.0"

from micronet_export.errors import UserError  # noqa: E402
from micronet_export.model import create_model, list_variants  # noqa: E402

__all__ = ["__version__", "create_model", "list_variants", "UserError"]
