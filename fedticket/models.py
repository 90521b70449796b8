"""Vision models used by the pruning and supermask literature, sized from arguments.

* ``lenet300``  784-300-100-10 MLP (LeCun et al.; the Lottery Ticket paper's LeNet-300-100)
* ``conv4`` / ``conv6``  the Conv-4/6 of Frankle & Carbin and the supermask papers (Zhou et al.,
  Ramanujan et al.): 3×3 convs without bias, 2×2 max-pools, then FC 256-256-classes
* ``vgg16``  CIFAR-shaped VGG-16 with BatchNorm, global average pool and one linear classifier
* ``resnet18``  the CIFAR ResNet-18 (3×3 stem, no max-pool), global average pool

``input_shape`` is (C, H, W); pools use ``ceil_mode`` so 28×28 inputs pass VGG's five pools.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

MODEL_NAMES = ("lenet300", "conv4", "conv6", "vgg16", "resnet18")


class LeNet300(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        d = int(math.prod(input_shape))
        self.fc1 = nn.Linear(d, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class ConvNet(nn.Module):
    """Conv-2/4/6: ``widths`` conv channels in pairs, a max-pool after each pair."""

    def __init__(self, input_shape, num_classes, widths: Sequence[int]):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
            c = width
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"input {tuple(input_shape)} is too small for {len(widths)} conv layers")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c * h * w, 256, bias=False), nn.ReLU(inplace=True),
            nn.Linear(256, 256, bias=False), nn.ReLU(inplace=True),
            nn.Linear(256, num_classes, bias=False),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        c = input_shape[0]
        layers: list[nn.Module] = []
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin, stages = 64, []
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


def build_model(name: str, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                seed: int | None = None) -> nn.Module:
    """Build a model by name; with ``seed`` the initial weights are a pure function of it."""
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    ctors = {
        "lenet300": lambda: LeNet300(input_shape, num_classes),
        "conv4": lambda: ConvNet(input_shape, num_classes, (64, 64, 128, 128)),
        "conv6": lambda: ConvNet(input_shape, num_classes, (64, 64, 128, 128, 256, 256)),
        "vgg16": lambda: VGG16(input_shape, num_classes),
        "resnet18": lambda: ResNet18(input_shape, num_classes),
    }
    if name not in ctors:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if seed is None:
        return ctors[name]()
    # fork_rng keeps the caller's global RNG stream untouched while making init a function of seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return ctors[name]()
