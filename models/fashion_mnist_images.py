"""Write Fashion-MNIST (Debian's dataset-fashion-mnist) as an ImageFolder of PNGs.

    python models/fashion_mnist_images.py --split test --output /tmp/fmnist-test            # all 10,000
    python models/fashion_mnist_images.py --split test --per-class 10 --output tests/data/fashion_mnist_slice
    python models/fashion_mnist_images.py --split test --folder-names name --output /tmp/fmnist-by-name

Folder names are the class names of models/micronet_m0_fashion_mnist.json, prefixed with the
class index so that sorted order is index order (``index_name``, the default; classes.txt lists
them in index order), or the bare class names (``name``: ``Bag/``, ``Trouser/``, the layout
``evaluate`` maps by the model's own class names).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fashion_mnist import CLASSES, load_split  # noqa: E402


FOLDER_NAMES = ("index_name", "name")


def class_folder(index: int, folder_names: str = "index_name") -> str:
    return f"{index}_{CLASSES[index]}" if folder_names == "index_name" else CLASSES[index]


def write_images(output: Path, split: str = "test", per_class: int | None = None, folder_names: str = "index_name") -> int:
    images, labels = load_split(split)
    output.mkdir(parents=True, exist_ok=True)
    counts = [0] * len(CLASSES)
    for i, (img, lab) in enumerate(zip(images, labels)):
        lab = int(lab)
        if per_class is not None and counts[lab] >= per_class:
            continue
        folder = output / class_folder(lab, folder_names)
        folder.mkdir(exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{split}_{i:05d}.png", optimize=True)
        counts[lab] += 1
    (output / "classes.txt").write_text("".join(class_folder(i, folder_names) + "\n" for i in range(len(CLASSES))))
    return sum(counts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--per-class", type=int)
    p.add_argument("--folder-names", choices=FOLDER_NAMES, default="index_name")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    n = write_images(args.output, args.split, args.per_class, args.folder_names)
    print(f"wrote {n} images to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
