"""README's Raspberry Pi snippet, as written, on a real fp32 TFLite export under tflite-runtime."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from micronet_export.export import artifact_names
from micronet_export.images import project_path
from micronet_export.predict import predict
from micronet_export.tflite_metadata import LABELS_FILE

PHOTO = project_path("models/fashion_mnist_calibration/7_Sneaker/train_00006.png")


def pi_snippet() -> str:
    readme = project_path("README.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "tflite_runtime" in b)


def test_readme_pi_snippet_runs_on_a_real_artifact(fashion_fp32_run, tmp_path):
    from PIL import Image

    snippet = pi_snippet()
    name = artifact_names("m0")["tflite_fp32"]
    assert f'"models/m0/{name}"' in snippet and f'"models/m0/{LABELS_FILE}"' in snippet
    photo_name = re.search(r'^PHOTO = "([^"]+)"$', snippet, flags=re.M).group(1)
    (tmp_path / "models" / "m0").mkdir(parents=True)
    for file in (name, LABELS_FILE):
        shutil.copy(fashion_fp32_run / file, tmp_path / "models" / "m0" / file)
    # A real photo saved under the snippet's own name and format; predict reads the same file.
    photo = tmp_path / photo_name
    Image.open(PHOTO).save(photo)
    labels = (tmp_path / "models" / "m0" / LABELS_FILE).read_text().splitlines()

    # A child process: tflite-runtime's interpreter fails once TensorFlow is imported, and the
    # export fixture imported it here (pyproject.toml, the tflite-runtime pin).
    run = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    printed = [line.rsplit(None, 1) for line in run.stdout.splitlines()]
    assert len(printed) == 5
    names, scores = [n for n, _ in printed], [float(s) for _, s in printed]
    assert set(names) <= set(labels) and len(set(names)) == 5
    assert scores == sorted(scores, reverse=True) and all(0.0 < s <= 1.0 for s in scores)

    ours = predict(tmp_path / "models" / "m0" / name, [photo]).predictions[0].top[0]
    assert names[0] == ours.name
    # Both run the same fp32 graph on the same pixels (predict's normalise-then-denormalise
    # round trip moves them by float32 rounding only), on two builds of the TFLite kernels:
    # their probabilities differ by < 1e-6 (measured over all 200 calibration photos), so the
    # bound is the snippet's 4-decimal print (<= 5e-5) with room to spare.
    assert abs(scores[0] - ours.score) <= 1e-4
