"""Check the synthetic data's difficulty: a small CNN should score ~90-97%, an MLP clearly less.

Plain torch, CPU, a few minutes: trains both on the Training rows of generate(n) and prints test accuracy
(PublicTest + PrivateTest rows) and per-class recall.

    python bench/calibrate_synthetic.py --n 6000 --epochs 10
"""

import argparse
import time

import numpy as np
import torch
from torch import nn

from fer.data.labels import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from fer.data.synthetic import generate


def cnn() -> nn.Module:
    """Four conv-BN-ReLU-pool blocks and a linear head."""
    layers: list[nn.Module] = []
    channels = 1
    for width in (16, 32, 64, 128):
        layers += [
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = width
    side = IMAGE_SIZE // 16
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * side * side, NUM_CLASSES))


def mlp() -> nn.Module:
    """Two hidden Linear-BN-ReLU-Dropout layers on the flattened pixels."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(IMAGE_SIZE * IMAGE_SIZE, 256),
        nn.BatchNorm1d(256),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(256, 128),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(128, NUM_CLASSES),
    )


def train_and_test(model: nn.Module, data: dict[str, torch.Tensor], epochs: int, seed: int) -> np.ndarray:
    """Adam-train on the training tensors; return predictions on the test tensors."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data["x_train"], data["y_train"]
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return torch.cat([model(b).argmax(1) for b in data["x_test"].split(512)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--balanced", action="store_true")
    args = parser.parse_args()

    faces = generate(args.n, seed=args.seed, balanced=args.balanced)
    train = faces.split == "Training"
    x = torch.from_numpy(faces.images).float().unsqueeze(1) / 255.0
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    y = torch.from_numpy(faces.labels)
    data = {"x_train": x[train], "y_train": y[train], "x_test": x[~train]}
    y_test = faces.labels[~train]
    print(f"{faces.source}: {int(train.sum())} train, {int((~train).sum())} test images")
    print("recall per class: " + " ".join(f"{name[:3]:>5s}" for name in CLASS_NAMES))
    for name, model in (("cnn", cnn()), ("mlp", mlp())):
        params = sum(p.numel() for p in model.parameters())
        start = time.perf_counter()
        pred = train_and_test(model, data, args.epochs, args.seed)
        recall = [np.mean(pred[y_test == k] == k) for k in range(NUM_CLASSES)]
        print(
            f"{name}: test accuracy {np.mean(pred == y_test):.3f}  "
            f"({params:,} parameters, {time.perf_counter() - start:.0f} s)  "
            + " ".join(f"{r:5.2f}" for r in recall)
        )


if __name__ == "__main__":
    main()
