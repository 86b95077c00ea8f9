"""micronet-export: MicroNet M0–M3 from PyTorch to ONNX Runtime and TFLite, with parity checks."""

__version__ = "0.1.0"

import os as _os

# TensorFlow and LiteRT print C++ log lines (oneDNN notices, CPU feature hints) to stderr at
# import; they would drown the CLI's one-line errors. Users can still set their own level.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from micronet_export.errors import UserError  # noqa: E402
from micronet_export.model import create_model, list_variants  # noqa: E402

__all__ = ["__version__", "create_model", "list_variants", "UserError"]
