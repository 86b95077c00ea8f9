"""Emulated aarch64: MicroNet's TFLite artifacts on ARM cores without a board.

qemu-user runs the Raspberry Pi runtime image's contents (an arm64 Python 3.11 from Debian,
the aarch64 wheels docker/Dockerfile.rpi installs, micronet_export/profile/runner.py) as a
chosen core (cortex-a53, cortex-a72, cortex-a76, neoverse-n1), with a TCG plugin counting the
guest instructions of the runner's marked invoke loop. Instruction counts are deterministic
and comparable across precisions and cores; they are not cycles.

- :mod:`cores`: the core table and each core's /proc/cpuinfo
- :mod:`environment`: preparation and cache (Debian packages + PyPI wheels only)
- :mod:`qemu`: one runner invocation under qemu-user
- :mod:`compare`: emulated vs x86 outputs (parity cells for ``check --emulate``)
- :mod:`advice`: per-core fp32-vs-int8 answer for an export's report
"""

from micronet_export.emulate.cores import CORES, Core, get_core, parse_cores

__all__ = ["CORES", "Core", "get_core", "parse_cores"]
