"""Train MicroNet-M0 on Fashion-MNIST (Debian's dataset-fashion-mnist, MIT licence).

The result is a checkpoint in the official format (the official module tree's state_dict),
so everything downstream treats it exactly like a released MicroNet checkpoint. Images go
through the project's one preprocessing function (grayscale replicated to RGB, shorter side
to size/0.875, centre crop, ImageNet mean/std), at --input-size (default 64).

    apt-get install dataset-fashion-mnist
    python models/train_fashion_mnist.py --epochs 12 --input-size 64 --threads 2

writes models/micronet_m0_fashion_mnist.pth and models/micronet_m0_fashion_mnist.json (card:
command, data, accuracy). CI never runs this.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from micronet_export import create_model
from micronet_export.images import IMAGENET_MEAN, IMAGENET_STD, preprocess

DATA = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
HERE = Path(__file__).resolve().parent
log = logging.getLogger("train")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[2:3], "big")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    assert magic == 0x08, "unsigned byte idx expected"
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    return read_idx(DATA / f"{prefix}-images-idx3-ubyte.gz"), read_idx(DATA / f"{prefix}-labels-idx1-ubyte.gz")


def to_model_input(images: np.ndarray, input_size: int) -> torch.Tensor:
    """The same preprocessing as export / evaluate, computed once: (N, 1, S, S) in [0, 1]."""
    mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, np.float32)[:, None, None]
    out = np.empty((len(images), 1, input_size, input_size), np.float32)
    for i, img in enumerate(images):
        arr = preprocess(Image.fromarray(img, mode="L"), input_size)
        out[i, 0] = (arr * std + mean)[0]  # undo the normalisation: channels are equal
    return torch.from_numpy(out)


def normalise(gray01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (gray01.expand(-1, 3, -1, -1) - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = 4
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


def add_activation_noise(model, steps: float, gen: torch.Generator) -> None:
    """Training-time hooks: noise of ``steps`` int8 quantization steps (range / 255, the range
    tracked as a running max of |x|) on the outputs an int8 model requantizes most: ReLU6s and
    micro-blocks. Inference is unchanged; the checkpoint stays in the official format."""
    from micronet_export.model.blocks import DYMicroBlock, DYShiftMax

    def hook(module, _inp, out):
        if not module.training:
            return out
        with torch.no_grad():
            current = out.detach().abs().amax()
            module._noise_range = torch.maximum(getattr(module, "_noise_range", current), current) * 0.999
            step = 2 * module._noise_range / 255
        return out + (torch.rand(out.shape, generator=gen) - 0.5) * step * steps

    for m in model.modules():
        if isinstance(m, (torch.nn.ReLU6, DYMicroBlock, DYShiftMax)):
            m.register_forward_hook(hook)


@torch.no_grad()
def evaluate(model, x01: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x01), batch):
        correct += (model(normalise(x01[i:i + batch])).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x01)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--weight-decay", type=float, default=4e-5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="train on the first N images (smoke runs)")
    p.add_argument("--act-noise", type=float, default=0.0,
                   help="int8-robust training: add uniform noise of this many int8 steps (of each "
                        "activation's running range) to every block output and ReLU6 during training")
    p.add_argument("--output", type=Path, default=HERE / "micronet_m0_fashion_mnist.pth")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)

    train_x, train_y = load_split("train")
    test_x, test_y = load_split("test")
    if args.limit:
        train_x, train_y = train_x[: args.limit], train_y[: args.limit]
    log.info("preprocessing %d + %d images at %d px", len(train_x), len(test_x), args.input_size)
    xtr, xte = to_model_input(train_x, args.input_size), to_model_input(test_x, args.input_size)
    ytr, yte = torch.from_numpy(train_y.astype(np.int64)), torch.from_numpy(test_y.astype(np.int64))

    model = create_model("m0", num_classes=10)
    model.train()
    if args.act_noise > 0:
        add_activation_noise(model, args.act_noise, gen)
    decay = [p_ for n, p_ in model.named_parameters() if p_.ndim > 1]
    no_decay = [p_ for n, p_ in model.named_parameters() if p_.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    total = args.epochs * steps_per_epoch
    warmup = steps_per_epoch // 2
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    start = time.time()
    history = []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        running, seen = 0.0, 0
        for i in range(0, len(xtr), args.batch_size):
            idx = order[i:i + args.batch_size]
            xb = normalise(augment(xtr[idx], gen))
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
            seen += len(idx)
        acc = evaluate(model, xte, yte)
        history.append({"epoch": epoch + 1, "train_loss": round(running / seen, 4), "test_top1": round(acc, 4)})
        log.info("epoch %d/%d loss %.4f test top-1 %.4f (%.0f s)", epoch + 1, args.epochs, running / seen, acc, time.time() - start)

    model.eval()
    acc = evaluate(model, xte, yte)
    torch.save(model.state_dict(), args.output)
    card = {
        "variant": "m0",
        "num_classes": 10,
        "classes": CLASSES,
        "input_size": args.input_size,
        "data": "Fashion-MNIST (Debian package dataset-fashion-mnist 0.0~git20200523.55506a9-1, MIT licence): "
                "60,000 training / 10,000 test images, 28x28 grayscale replicated to RGB",
        "preprocessing": "micronet_export.images.preprocess (shorter side to input_size/0.875 bilinear, centre crop, ImageNet mean/std)",
        "test_top1": round(acc, 4),
        "test_images": int(len(xte)),
        "command": "python models/train_fashion_mnist.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "seed": args.seed, "torch": torch.__version__, "train_seconds": round(time.time() - start),
        "history": history,
        "format": "official MicroNet state_dict (liyunsheng13/micronet key names), loads with create_model('m0', num_classes=10)",
    }
    args.output.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s (test top-1 %.4f)", args.output, acc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
