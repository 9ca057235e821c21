"""What both sides of the SDK benchmark share: the CNN, the data, the timer.

The data is exported once by `export_digits.py` (the bundled UCI digits, an
IID split into CLIENTS shards plus the shared held-out set), so that Flower
and TensorGuard train on exactly the same arrays.
"""

import os
import threading
import time

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)  # one training per core on either framework


class Net(nn.Module):
    """The quickstart's CNN: conv(1→8, 3×3) + max-pool + linear(128→10), 1,170 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x.view(-1, 1, 8, 8)))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


def load(path: str, i: int):
    d = np.load(path)
    return torch.from_numpy(d[f"x{i}"]), torch.from_numpy(d[f"y{i}"])


def load_test(path: str):
    d = np.load(path)
    return torch.from_numpy(d["xt"]), torch.from_numpy(d["yt"])


def train(net: Net, x, y, epochs: int, seed: int) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(16):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()


def accuracy(net: Net, x, y) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


class TreeRss:
    """Peak resident memory of this process and all its descendants
    (Ray's workers included), sampled every 50 ms from /proc."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @staticmethod
    def _tree_rss() -> int:
        parents = {}
        rss = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{pid}/statm") as f:
                    rss[int(pid)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
        mine = {os.getpid()}
        grew = True
        while grew:
            grew = False
            for p, pp in parents.items():
                if pp in mine and p not in mine:
                    mine.add(p)
                    grew = True
        return sum(rss.get(p, 0) for p in mine)

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self._tree_rss())
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop = True
        self._t.join()
        return self.peak
