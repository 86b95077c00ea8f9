"""Where a profile runs: this machine, an Android device over adb, a board over ssh, or an
emulated ARM core (qemu-user, instruction counts; see micronet_export/emulate).

Every target returns the same record per (artifact, thread count): latency percentiles in ms,
init time, peak RSS, model size, runtime and its version, the device, and per-op times when
the runtime exposes them. Local and ssh targets run ``runner.py`` (self-contained); adb runs
TFLite's ``benchmark_model`` and parses its text.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from micronet_export.errors import UserError
from micronet_export.profile.benchmark_model import parse_benchmark_output

RUNNER = Path(__file__).resolve().parent / "runner.py"  # also runner.RUNNER
DEVICE_DIR = "/data/local/tmp/micronet-export"


@dataclass
class ProfileOptions:
    threads: list[int] = field(default_factory=lambda: [1])
    runs: int = 100
    warmup: int = 10
    xnnpack: bool = True
    cpus: str | None = None
    benchmark_binary: str | None = None
    identity: str | None = None
    known_hosts: str | None = None
    ssh_options: list[str] = field(default_factory=list)
    remote_python: str = "python3"
    timeout: float = 600.0
    emulated_runtimes: tuple[str, ...] = ("litert", "tflite_runtime")


def parse_target(target: str) -> tuple[str, dict]:
    if target in ("local", ""):
        return "local", {}
    if target.startswith("emu:") or target == "emu":
        from micronet_export.emulate.cores import CORES, get_core

        if not target[4:]:
            raise UserError(f"emu target needs a core: emu:CORE with CORE one of {', '.join(CORES)}")
        return "emu", {"core": get_core(target[4:]).name}
    if target == "adb" or target.startswith("adb:"):
        return "adb", {"serial": target[4:] or None}
    if target.startswith("ssh:"):
        rest = target[4:]
        if not rest:
            raise UserError("ssh target needs a host: ssh:[USER@]HOST[:PORT]")
        user, _, hostport = rest.rpartition("@")
        host, port = hostport, None
        if hostport.count(":") == 1:
            host, port_text = hostport.split(":")
            if not port_text.isdigit():
                raise UserError(f"bad ssh port {port_text!r} in {target!r}")
            port = int(port_text)
        return "ssh", {"user": user or None, "host": host, "port": port}
    raise UserError(f"unknown target {target!r}; use local, adb[:SERIAL], ssh:[USER@]HOST[:PORT] or emu:CORE")


def _runner_args(model: str, threads: int, opts: ProfileOptions) -> list[str]:
    args = [model, "--threads", str(threads), "--runs", str(opts.runs), "--warmup", str(opts.warmup)]
    if not opts.xnnpack:
        args.append("--no-xnnpack")
    if opts.cpus:
        args += ["--cpus", opts.cpus]
    if model.endswith(".onnx"):
        args.append("--profile-ops")
    return args


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line")


# -- local ------------------------------------------------------------------------------

def profile_local(artifact: Path, threads: int, opts: ProfileOptions) -> dict:
    cmd = [sys.executable, str(RUNNER), *_runner_args(str(artifact), threads, opts)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=opts.timeout)
    if proc.returncode != 0:
        raise UserError(f"runner failed on {artifact.name}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    result = _last_json(proc.stdout)
    if opts.benchmark_binary and artifact.suffix == ".tflite":
        result["benchmark_model"] = run_benchmark_model_local(artifact, threads, opts)
        result["ops"] = result["benchmark_model"].get("ops", [])
    result["target"] = "local"
    return result


def _benchmark_args(graph: str, threads: int, opts: ProfileOptions) -> list[str]:
    return [f"--graph={graph}", f"--num_threads={threads}", f"--use_xnnpack={'true' if opts.xnnpack else 'false'}",
            "--enable_op_profiling=true", f"--num_runs={opts.runs}", f"--warmup_runs={opts.warmup}"]


def run_benchmark_model_local(artifact: Path, threads: int, opts: ProfileOptions) -> dict:
    binary = Path(opts.benchmark_binary)
    if not binary.is_file():
        raise UserError(f"benchmark binary {binary} does not exist")
    proc = subprocess.run([str(binary), *_benchmark_args(str(artifact), threads, opts)],
                          capture_output=True, text=True, timeout=opts.timeout)
    if proc.returncode != 0:
        raise UserError(f"benchmark_model failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return parse_benchmark_output(proc.stdout + "\n" + proc.stderr)


# -- emulated aarch64 -------------------------------------------------------------------

def profile_emulated(artifacts: list[Path], core_name: str, threads_list: list[int], opts: ProfileOptions) -> list[dict]:
    """The runner under qemu-user as ``core_name``, on LiteRT and tflite-runtime."""
    from micronet_export.emulate.cores import get_core
    from micronet_export.emulate.profiling import profile_core

    if threads_list != [1]:
        raise UserError("emulated targets count the instructions of one thread: use --threads 1")
    if not opts.xnnpack:
        raise UserError("emulated targets profile the runtimes as shipped (XNNPACK on); drop --no-xnnpack")
    return profile_core(artifacts, get_core(core_name), runtimes=opts.emulated_runtimes, runs=opts.runs,
                        warmup=opts.warmup)


# -- ssh --------------------------------------------------------------------------------

class SshTarget:
    """Copies runner.py and the model to a temporary folder on the host, runs, cleans up.

    Host-key checking stays on (OpenSSH's default); BatchMode forbids password prompts, so
    keys come from the agent, ~/.ssh or --identity.
    """

    def __init__(self, user: str | None, host: str, port: int | None, opts: ProfileOptions) -> None:
        if shutil.which("ssh") is None or shutil.which("scp") is None:
            raise UserError("ssh/scp not found on PATH; install an OpenSSH client")
        self.dest = f"{user}@{host}" if user else host
        self.opts = opts
        common = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        if opts.identity:
            common += ["-i", opts.identity, "-o", "IdentitiesOnly=yes"]
        if opts.known_hosts:
            common += ["-o", f"UserKnownHostsFile={opts.known_hosts}"]
        for o in opts.ssh_options:
            common += ["-o", o]
        self.ssh = ["ssh", *common] + (["-p", str(port)] if port else [])
        self.scp = ["scp", "-q", *common] + (["-P", str(port)] if port else [])
        self.label = f"ssh:{self.dest}" + (f":{port}" if port else "")

    def _run(self, cmd: list[str], what: str) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.opts.timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise UserError(f"{self.label}: {what} failed: {last}")
        return proc.stdout

    def shell(self, command: str, what: str) -> str:
        return self._run([*self.ssh, self.dest, command], what)

    def profile(self, artifacts: list[Path], threads_list: list[int]) -> list[dict]:
        remote = self.shell("mktemp -d", "creating a remote folder").strip()
        results = []
        try:
            self._run([*self.scp, str(RUNNER), *map(str, artifacts), f"{self.dest}:{remote}/"], "copying the runner and models")
            for artifact in artifacts:
                for threads in threads_list:
                    args = _runner_args(f"{remote}/{artifact.name}", threads, self.opts)
                    out = self.shell(" ".join([_remote_word(self.opts.remote_python)]
                                              + [shlex.quote(a) for a in [f"{remote}/runner.py", *args]]),
                                     f"running {artifact.name}")
                    result = _last_json(out)
                    result["target"] = self.label
                    results.append(result)
        finally:
            try:
                self.shell(f"rm -rf {shlex.quote(remote)}", "cleaning up")
            except UserError:
                pass
        return results


def _remote_word(path: str) -> str:
    """Quote for the remote shell but keep a leading ~/ expandable (--remote-python ~/venv/bin/python)."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


# -- adb --------------------------------------------------------------------------------

class AdbTarget:
    def __init__(self, serial: str | None, opts: ProfileOptions) -> None:
        self.adb = shutil.which("adb")
        if self.adb is None:
            raise UserError("adb not found on PATH; install Android platform-tools (Debian: apt-get install adb)")
        self.opts = opts
        self.serial = self._pick_device(serial)
        self.label = f"adb:{self.serial}"

    def _cmd(self, *args: str) -> list[str]:
        base = [self.adb] + (["-s", self.serial] if getattr(self, "serial", None) else [])
        return [*base, *args]

    def _run(self, args: list[str], what: str) -> str:
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=self.opts.timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"adb: {what} timed out") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]
            raise UserError(f"adb: {what} failed: {last}")
        return proc.stdout

    def _pick_device(self, serial: str | None) -> str:
        out = self._run([self.adb, "devices"], "listing devices")
        devices = {}
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2:
                devices[parts[0]] = parts[1]
        if serial:
            if serial not in devices:
                raise UserError(f"adb device {serial} is not attached (attached: {', '.join(devices) or 'none'})")
            candidates = {serial: devices[serial]}
        else:
            candidates = devices
        if not candidates:
            raise UserError("no Android device attached (adb devices lists none); connect one and enable USB debugging")
        ready = [s for s, state in candidates.items() if state == "device"]
        if not ready:
            s, state = next(iter(candidates.items()))
            if state == "unauthorized":
                raise UserError(f"adb device {s} is unauthorized: accept the USB debugging prompt on the device")
            raise UserError(f"adb device {s} is {state}, not ready")
        if len(ready) > 1 and not serial:
            raise UserError(f"{len(ready)} devices attached ({', '.join(ready)}); pick one with --target adb:SERIAL")
        return ready[0]

    def prop(self, name: str) -> str:
        return self._run(self._cmd("shell", "getprop", name), f"reading {name}").strip()

    def profile(self, artifacts: list[Path], threads_list: list[int]) -> list[dict]:
        device = {"model": self.prop("ro.product.model"), "abi": self.prop("ro.product.cpu.abi"), "serial": self.serial}
        self._run(self._cmd("shell", "mkdir", "-p", DEVICE_DIR), "creating the device folder")
        binary = f"{DEVICE_DIR}/benchmark_model"
        if self.opts.benchmark_binary:
            self._run(self._cmd("push", self.opts.benchmark_binary, binary), "pushing benchmark_model")
            self._run(self._cmd("shell", "chmod", "+x", binary), "making benchmark_model executable")
        results = []
        for artifact in artifacts:
            if artifact.suffix != ".tflite":
                raise UserError(f"the adb target profiles .tflite models; {artifact.name} is not one")
            remote = f"{DEVICE_DIR}/{artifact.name}"
            self._run(self._cmd("push", str(artifact), remote), f"pushing {artifact.name}")
            for threads in threads_list:
                text = self._run(self._cmd("shell", binary, *_benchmark_args(remote, threads, self.opts)),
                                 f"running benchmark_model on {artifact.name}")
                parsed = parse_benchmark_output(text)
                results.append(from_benchmark_model(parsed, artifact, threads, self.label, device))
        return results


def from_benchmark_model(parsed: dict, artifact: Path, threads: int, target: str, device: dict) -> dict:
    """benchmark_model's numbers in the runner's record shape."""
    lat = parsed.get("latency_ms", {})
    return {
        "model": artifact.name, "model_size_bytes": artifact.stat().st_size if artifact.exists() else None,
        "runtime": "benchmark_model", "runtime_version": None, "threads": threads, "target": target,
        "device": device, "init_ms": parsed.get("init_ms"), "runs": lat.get("count"),
        "latency_ms": {"p50": lat.get("p50", parsed.get("mean_ms")), "p90": lat.get("p90"), "p99": lat.get("p99"),
                       "min": lat.get("min"), "mean": lat.get("mean", parsed.get("mean_ms"))},
        "peak_rss_mb": (parsed.get("peak_memory_mb") or parsed.get("memory_mb") or {}).get("overall"),
        "ops": parsed.get("ops", []), "ops_by_type": parsed.get("ops_by_type", []),
    }
