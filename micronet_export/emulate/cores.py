"""The ARM cores qemu-user emulates for us, and the /proc/cpuinfo each one needs.

XNNPACK picks its kernels from two sources: the HWCAP bits (which qemu derives from ``-cpu``)
and the core's MIDR, which it reads from /proc/cpuinfo. qemu 7.2 passes the host's x86
/proc/cpuinfo through, on which LiteRT crashes while creating an interpreter; and a MIDR that
names a core with SDOT while ``-cpu`` has none makes XNNPACK run SDOT kernels that then fault
(illegal instruction). So every core gets a cpuinfo whose MIDR and Features are qemu's own for
that ``-cpu`` (target/arm/cpu64.c of QEMU 7.2).

``max`` is not offered: QEMU 7.2's ``max`` advertises SME, and LiteRT's int8 outputs on it are
wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from micronet_export.errors import UserError

_ARMV8_0_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_ARMV8_2_DOTPROD_FEATURES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                             "asimdrdm lrcpc dcpop asimddp ssbs")


@dataclass(frozen=True)
class Core:
    name: str  # qemu's -cpu name
    midr: int  # MIDR_EL1 as qemu sets it for this -cpu
    features: str  # the Linux cpuinfo "Features" line matching qemu's HWCAPs for this -cpu
    dot_product: bool  # FEAT_DotProd (SDOT/UDOT)
    i8mm: bool  # FEAT_I8MM (SMMLA, USDOT)
    boards: str  # where users meet this core

    @property
    def implementer(self) -> int:
        return self.midr >> 24

    @property
    def variant(self) -> int:
        return (self.midr >> 20) & 0xF

    @property
    def part(self) -> int:
        return (self.midr >> 4) & 0xFFF

    @property
    def revision(self) -> int:
        return self.midr & 0xF

    def cpuinfo(self, processors: int) -> str:
        """A Linux arm64 /proc/cpuinfo for ``processors`` identical cores."""
        block = (f"BogoMIPS\t: 50.00\nFeatures\t: {self.features}\nCPU implementer\t: 0x{self.implementer:02x}\n"
                 f"CPU architecture: 8\nCPU variant\t: 0x{self.variant:x}\nCPU part\t: 0x{self.part:03x}\n"
                 f"CPU revision\t: {self.revision}\n\n")
        return "".join(f"processor\t: {i}\n{block}" for i in range(max(1, processors)))


CORES: dict[str, Core] = {c.name: c for c in (
    Core("cortex-a53", 0x410FD034, _ARMV8_0_FEATURES, False, False, "Raspberry Pi 3, low-end phones"),
    Core("cortex-a72", 0x410FD083, _ARMV8_0_FEATURES, False, False, "Raspberry Pi 4"),
    Core("cortex-a76", 0x414FD0B1, _ARMV8_2_DOTPROD_FEATURES, True, False, "Raspberry Pi 5, most phones since 2019"),
    Core("neoverse-n1", 0x414FD0C1, _ARMV8_2_DOTPROD_FEATURES, True, False, "Arm servers (Graviton2, Ampere Altra)"),
)}


def get_core(name: str) -> Core:
    core = CORES.get(name.strip().lower())
    if core is None:
        raise UserError(f"unknown emulated core {name.strip()!r}; valid: {', '.join(CORES)}")
    return core


def parse_cores(text: str | list[str] | tuple[str, ...]) -> list[Core]:
    """``cortex-a72,cortex-a76`` → the cores, in order, without repeats."""
    names = [n for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise UserError(f"no emulated core given; valid: {', '.join(CORES)}")
    cores: list[Core] = []
    for name in names:
        core = get_core(name)
        if core not in cores:
            cores.append(core)
    return cores
