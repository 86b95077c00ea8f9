"""`micronet-export profile`: local numbers, a real sshd on loopback, adb failure modes, the
benchmark_model parser, the plot."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from micronet_export import create_model
from micronet_export.onnx_export import export_onnx
from micronet_export.profile import ProfileOptions, plot_profile, profile
from micronet_export.profile.benchmark_model import parse_benchmark_output
from micronet_export.profile.targets import from_benchmark_model, parse_target
from micronet_export.tflite_export import convert

from conftest import skip_unless_ci
from test_cli import assert_one_line_error, run_cli

DATA = Path(__file__).parent / "data"


def _require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        skip_unless_ci(f"{binary} is not installed; .ci/run installs it")
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile-artifacts")
    proto = export_onnx(create_model("m0"), input_size=96)
    import onnx

    onnx.save(proto, out / "m0.onnx")
    (out / "m0.tflite").write_bytes(convert(proto, "fp32").flatbuffer)
    return out


def test_local_profile_json(artifacts):
    proc = run_cli("profile", str(artifacts / "m0.tflite"), str(artifacts / "m0.onnx"),
                   "--threads", "1,2", "--runs", "20", "--warmup", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(r["model"], r["threads"]) for r in data["results"]] == [
        ("m0.tflite", 1), ("m0.tflite", 2), ("m0.onnx", 1), ("m0.onnx", 2)]
    for r in data["results"]:
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
        assert r["runs"] == 20 and r["peak_rss_mb"] > 0 and r["init_ms"] > 0 and r["model_size_bytes"] > 0
    onnx_ops = data["results"][2]["ops"]
    assert onnx_ops and {"Conv", "Gemm"} & {o["op"] for o in onnx_ops}


def test_local_profile_table_and_pinning(artifacts):
    proc = run_cli("profile", str(artifacts / "m0.tflite"), "--threads", "1", "--runs", "10", "--cpus", "0")
    assert proc.returncode == 0, proc.stderr
    assert "p50 ms" in proc.stdout and "p90 ms" in proc.stdout and "litert" in proc.stdout
    assert "cpus [0]" in proc.stdout


def test_plot_is_a_readable_png(tmp_path, artifacts):
    results = profile([artifacts / "m0.onnx"], "local", ProfileOptions(threads=[1, 2], runs=10, warmup=1))
    png = plot_profile(results, tmp_path / "p.png")
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] >= 1000 and img.size[1] >= 400
        # not a blank canvas: lines, bars and text
        assert np.asarray(img.convert("L")).std() > 10


@pytest.mark.parametrize("target,expected", [
    ("local", ("local", {})),
    ("adb", ("adb", {"serial": None})),
    ("adb:emulator-5554", ("adb", {"serial": "emulator-5554"})),
    ("ssh:pi@raspberrypi.local:2222", ("ssh", {"user": "pi", "host": "raspberrypi.local", "port": 2222})),
    ("ssh:board", ("ssh", {"user": None, "host": "board", "port": None})),
])
def test_parse_target(target, expected):
    assert parse_target(target) == expected


def test_profile_errors(tmp_path, artifacts):
    assert_one_line_error(run_cli("profile", str(tmp_path / "none.tflite")), "does not exist")
    assert_one_line_error(run_cli("profile", str(artifacts / "m0.onnx"), "--target", "usb"), "unknown target 'usb'")
    assert_one_line_error(run_cli("profile", str(artifacts / "m0.onnx"), "--threads", "one"), "--threads")


# -- benchmark_model output ---------------------------------------------------------------

def test_parse_current_benchmark_model_output():
    parsed = parse_benchmark_output((DATA / "benchmark_model_output.txt").read_text())
    assert parsed["init_ms"] == pytest.approx(31.412)
    assert parsed["first_inference_ms"] == pytest.approx(3.812)
    assert parsed["mean_ms"] == pytest.approx(2.11827)
    assert parsed["latency_ms"]["count"] == 466
    assert parsed["latency_ms"]["min"] == pytest.approx(1.998)
    assert parsed["latency_ms"]["mean"] == pytest.approx(2.0618)
    assert parsed["memory_mb"] == {"init": pytest.approx(4.85156), "overall": pytest.approx(5.33594)}
    assert parsed["ops_by_type"][0] == {"op": "TfLiteXNNPackDelegate", "count": 1, "ms": 2.061, "percent": 100.0}
    assert parsed["ops"][0]["op"] == "TfLiteXNNPackDelegate" and parsed["ops"][0]["ms"] == pytest.approx(2.061)
    assert parsed["nodes_observed"] == 1


def test_parse_older_benchmark_model_output():
    parsed = parse_benchmark_output((DATA / "benchmark_model_output_v1.txt").read_text())
    assert parsed["init_ms"] == pytest.approx(38.467)
    assert parsed["warmup_ms"] == pytest.approx(4.1025)
    assert parsed["mean_ms"] == pytest.approx(3.9212)
    assert [o["op"] for o in parsed["ops"]] == ["PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE"]
    assert parsed["ops"][1] == {"op": "CONV_2D", "name": "micronet/stem/conv", "ms": 0.298, "percent": 7.597}
    assert sum(o["count"] for o in parsed["ops_by_type"]) == 4
    record = from_benchmark_model(parsed, Path("m.tflite"), 4, "adb:X", {"model": "Pixel"})
    assert record["latency_ms"]["mean"] == pytest.approx(3.9212) and record["init_ms"] == pytest.approx(38.467)


# -- adb ------------------------------------------------------------------------------------

def test_adb_missing(tmp_path, artifacts):
    env_path = tmp_path / "bin"
    env_path.mkdir()
    proc = subprocess.run([sys.executable, "-m", "micronet_export.cli", "profile", str(artifacts / "m0.tflite"),
                           "--target", "adb"], capture_output=True, text=True, env={**os.environ, "PATH": str(env_path)})
    assert_one_line_error(proc, "adb not found on PATH")


def test_adb_without_device(artifacts):
    adb = _require("adb")
    try:
        assert_one_line_error(run_cli("profile", str(artifacts / "m0.tflite"), "--target", "adb"),
                              "no Android device attached")
        assert_one_line_error(run_cli("profile", str(artifacts / "m0.tflite"), "--target", "adb:R58M12345"),
                              "adb device R58M12345 is not attached")
    finally:
        subprocess.run([adb, "kill-server"], capture_output=True)


# -- ssh against a real OpenSSH server on 127.0.0.1 -------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    sshd_bin = _require("sshd")
    keygen = _require("ssh-keygen")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    config = d / "sshd_config"
    config.write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host'}
AuthorizedKeysFile {d / 'authorized_keys'}
PidFile {d / 'sshd.pid'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp /usr/lib/openssh/sftp-server
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    host_key = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (d / "empty_known_hosts").write_text("")
    yield {"port": port, "identity": str(d / "client"), "known_hosts": str(d / "known_hosts"),
           "empty_known_hosts": str(d / "empty_known_hosts")}
    proc.terminate()
    proc.wait(timeout=10)


def test_ssh_target_runs_the_remote_runner(sshd, artifacts):
    user = os.environ.get("USER") or "root"
    proc = run_cli("profile", str(artifacts / "m0.tflite"), "--target", f"ssh:{user}@127.0.0.1:{sshd['port']}",
                   "--identity", sshd["identity"], "--known-hosts", sshd["known_hosts"],
                   "--remote-python", sys.executable, "--threads", "1,2", "--runs", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["results"]) == 2
    for r in data["results"]:
        assert r["target"] == f"ssh:{user}@127.0.0.1:{sshd['port']}"
        # Proof of origin: the runner ran inside an sshd session, in its own process.
        assert r["ssh_connection"] and r["ssh_connection"].split()[2] == "127.0.0.1"
        assert r["ssh_connection"].split()[3] == str(sshd["port"])
        assert r["pid"] != os.getpid() and r["hostname"] == socket.gethostname()
        assert r["runtime"] == "litert" and r["runtime_version"]
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p90"]


def test_ssh_host_key_checking_stays_on(sshd, artifacts):
    proc = run_cli("profile", str(artifacts / "m0.tflite"), "--target", f"ssh:127.0.0.1:{sshd['port']}",
                   "--identity", sshd["identity"], "--known-hosts", sshd["empty_known_hosts"],
                   "--ssh-option", "StrictHostKeyChecking=yes", "--remote-python", sys.executable)
    assert_one_line_error(proc, "ssh:127.0.0.1", "failed", "Host key verification failed")


def test_ssh_unreachable_host_is_one_line(artifacts):
    port = _free_port()
    proc = run_cli("profile", str(artifacts / "m0.tflite"), "--target", f"ssh:127.0.0.1:{port}")
    assert_one_line_error(proc, f"ssh:127.0.0.1:{port}", "failed")


def test_remote_python_keeps_home_expandable():
    from micronet_export.profile.targets import _remote_word

    assert _remote_word("~/mn/bin/python") == "~/mn/bin/python"
    assert _remote_word("/opt/my env/python") == "'/opt/my env/python'"
    assert _remote_word("~/a b/python") == "~/'a b/python'"


# The runner's own peak (Python, numpy, the runtime, one small model: 60-100 MB) varies by a few
# MB from run to run: allocator and thread-stack timing.
PEAK_RSS_REL = 0.10
BALLAST_MB = 400


def test_peak_rss_is_the_runners_own_not_its_parents(artifacts):
    """A runner started by a large process (the CLI holds torch, TF and the artifacts) reports
    its own peak, the same as when a small process starts it."""
    from micronet_export.profile.targets import RUNNER

    model = str(artifacts / "m0.onnx")
    launcher = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    small_parent = subprocess.run([sys.executable, "-c", launcher, sys.executable, str(RUNNER), model, "--runs", "3"],
                                  capture_output=True, text=True, timeout=300)
    assert small_parent.returncode == 0, small_parent.stderr
    alone = json.loads(small_parent.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    ballast = np.ones(BALLAST_MB * 2**20 // 8)  # resident in this process, the runner's parent
    got = profile([model], options=ProfileOptions(runs=3, warmup=1))[0]["peak_rss_mb"]
    assert float(ballast[-1]) == 1.0
    assert got == pytest.approx(alone, rel=PEAK_RSS_REL)
    assert got < BALLAST_MB / 2
