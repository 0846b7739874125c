"""PyTorch reference loops for the side-by-side benchmarks (run by another interpreter).

PyTorch is not a dependency of lottery-tf. `train_bench` runs this file with
an interpreter that has it (`--torch_python`), so the figures it compares
come from one machine in one session. The loops are written the way an
open_lth-style PyTorch IMP implementation does it, in eager mode: the masks
are applied to the weights after every optimizer step, evaluation is one
forward pass per set under `no_grad`. Adapted from the project's shared
reference script `bench/torch_imp_round.py`.

    python torch_reference.py round DATA.npz ITERATIONS EVAL_EVERY
    python torch_reference.py steps MODEL BATCH HEIGHT WIDTH CHANNELS STEPS WARMUP

Each prints one JSON line. Importing this module needs nothing but the
standard library (torch is imported when it runs).
"""

import json
import sys
import time


def _models(torch):
    nn = torch.nn

    class LeNet(nn.Module):
        def __init__(self, channels, height, width, classes):
            super().__init__()
            self.fc1 = nn.Linear(channels * height * width, 300)
            self.fc2 = nn.Linear(300, 100)
            self.fc3 = nn.Linear(100, classes)

        def forward(self, x):
            x = x.flatten(1)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    class Conv2(nn.Module):
        def __init__(self, channels, height, width, classes):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, 64, 3, padding=1)
            self.conv2 = nn.Conv2d(64, 64, 3, padding=1)
            self.fc1 = nn.Linear(64 * (height // 2) * (width // 2), 256)
            self.fc2 = nn.Linear(256, 256)
            self.fc3 = nn.Linear(256, classes)

        def forward(self, x):
            x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            x = torch.nn.functional.max_pool2d(x, 2).flatten(1)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    def conv_bn(cin, cout, stride=1, kernel=3):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.a = conv_bn(cin, cout, stride)
            self.b = conv_bn(cout, cout)
            self.shortcut = conv_bn(cin, cout, stride, 1) if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.shortcut(x) + self.b(torch.relu(self.a(x))))

    class ResNet20(nn.Module):
        def __init__(self, channels, height, width, classes):
            super().__init__()
            layers, cin = [conv_bn(channels, 16), nn.ReLU()], 16
            for stage, filters in enumerate((16, 32, 64)):
                for block in range(3):
                    layers.append(Block(cin, filters, 2 if stage and not block else 1))
                    cin = filters
            self.body = nn.Sequential(*layers)
            self.fc = nn.Linear(64, classes)

        def forward(self, x):
            return self.fc(self.body(x).mean((2, 3)))

    class VGG19(nn.Module):
        def __init__(self, channels, height, width, classes):
            super().__init__()
            layers, cin = [], channels
            for block, (filters, count) in enumerate([(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]):
                if block:
                    layers.append(nn.MaxPool2d(2))
                for _ in range(count):
                    layers += [conv_bn(cin, filters), nn.ReLU()]
                    cin = filters
            self.body = nn.Sequential(*layers)
            self.fc = nn.Linear(512, classes)

        def forward(self, x):
            return self.fc(self.body(x).mean((2, 3)))

    return {"lenet_300_100": LeNet, "conv2": Conv2, "resnet20": ResNet20, "vgg19": VGG19}


def _masks(torch, model, density=0.8):
    """Random masks of round-1 density on every weight matrix / kernel."""
    generator = torch.Generator().manual_seed(0)
    return {name: (torch.rand(p.shape, generator=generator) < density).float()
            for name, p in model.named_parameters() if p.dim() > 1}


def _apply(torch, model, masks):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])


def _optimizer(torch, name, model):
    if name in ("resnet20", "vgg19"):  # the paper's SGD recipe (flags/*_cifar10.flags)
        return torch.optim.SGD(model.parameters(), 0.03, momentum=0.9, weight_decay=1e-4)
    return torch.optim.Adam(model.parameters(), 1.2e-3)


def round_main(path, iterations, eval_every):
    """One pruned LeNet-300-100 round on the arrays in `path` (NHWC uint8 images, labels)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    arrays = np.load(path)

    def tensor(name):
        images = torch.tensor(arrays[f"{name}_images"].reshape(len(arrays[f"{name}_images"]), -1),
                              dtype=torch.float32) / 255
        return images, torch.tensor(arrays[f"{name}_labels"].astype(np.int64))

    (xtr, ytr), (xva, yva), (xte, yte) = tensor("train"), tensor("validation"), tensor("test")
    model = _models(torch)["lenet_300_100"](1, 28, 28, 10)
    optimizer = _optimizer(torch, "lenet_300_100", model)
    masks = _masks(torch, model)
    _apply(torch, model, masks)
    evaluation = 0.0

    def evaluate(x, y):
        with torch.no_grad():
            out = model(x)
            return torch.nn.functional.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()

    start = time.perf_counter()
    step = 0
    while step < iterations:
        order = torch.randperm(len(xtr))
        for i in range(0, len(xtr) - 59, 60):
            batch = order[i:i + 60]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xtr[batch]), ytr[batch])
            loss.backward()
            optimizer.step()
            _apply(torch, model, masks)
            step += 1
            if step % eval_every == 0:
                began = time.perf_counter()
                evaluate(xva, yva)
                evaluate(xte, yte)
                evaluation += time.perf_counter() - began
            if step >= iterations:
                break
    wall = time.perf_counter() - start
    return {"round_s": wall, "evaluation_s": evaluation, "test_accuracy": evaluate(xte, yte)[1],
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def steps_main(name, batch, height, width, channels, steps, warmup):
    """Seconds per training step of model `name` on random NCHW data, masks applied each step."""
    import torch

    torch.manual_seed(0)
    model = _models(torch)[name](channels, height, width, 10)
    optimizer = _optimizer(torch, name, model)
    masks = _masks(torch, model)
    x = torch.rand(batch, channels, height, width)
    y = torch.randint(0, 10, (batch,))

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        _apply(torch, model, masks)

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return {"step_s": (time.perf_counter() - start) / steps, "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def main(argv):
    mode, args = argv[1], argv[2:]
    if mode == "round":
        result = round_main(args[0], int(args[1]), int(args[2]))
    elif mode == "steps":
        result = steps_main(args[0], *[int(a) for a in args[1:]])
    else:
        raise SystemExit(f"unknown mode {mode!r}: round or steps")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
