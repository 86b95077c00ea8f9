"""Silence native libraries' prints (TensorFlow, the MLIR quantizer, LiteRT) and import
TensorFlow quietly. Python exceptions still propagate: they carry the real errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

# Set to any value to see the native logs (debugging a native crash).
NATIVE_LOGS_ENV = "MICRONET_EXPORT_NATIVE_LOGS"


@contextlib.contextmanager
def quiet_native_output(stdout: bool = True, stderr: bool = True):
    """Silence C/C++ prints on fd 1/2 (TF's absl/oneDNN notices, the MLIR quantizer's
    "fully_quantize:" line, LiteRT's "Created ... XNNPACK delegate")."""
    if os.environ.get(NATIVE_LOGS_ENV):
        yield
        return
    fds = [fd for fd, on in ((1, stdout), (2, stderr)) if on]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with open(os.devnull, "wb") as devnull:
        for fd in fds:
            os.dup2(devnull.fileno(), fd)
    try:
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def import_tensorflow():
    """``tensorflow``, imported without its start-up notices and with its loggers at ERROR."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_native_output():
        import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tf
