"""A CNN on the bundled digits, federated over 50 clients with secure
aggregation and distributed differential privacy.

Run:  python python/examples/quickstart_pytorch.py   (under a minute on 2 cores)

Each client trains the same small CNN on its own shard (a non-IID Dirichlet
split) with an ordinary PyTorch loop. TensorGuard clips each update, adds
each client's share of the DP noise, masks it (SecAgg+), and the server
only ever sees the noisy sum; the summary reports the ε spent.

User-level DP needs many users: with 50 clients and ε = 8 this reaches
80–85% held-out accuracy in 6 rounds (the noise is real, so runs differ); with 10 clients the same ε leaves
too much noise to learn (about 20%).
"""

import numpy as np
import torch
from torch import nn

import tensorguard

torch.set_num_threads(1)  # clients train side by side, one per core
CLIENTS, ROUNDS = 50, 6


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x.view(-1, 1, 8, 8)))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


app = tensorguard.ClientApp()


@app.train(format="torch")
def train(state, config, context):
    (x, y), _ = tensorguard.datasets.digits(
        context.partition_id, context.num_partitions, partition="dirichlet:1.0", seed=1
    )
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    net = Net()
    net.load_state_dict(state)
    opt = torch.optim.SGD(net.parameters(), lr=config["learning_rate"], momentum=0.9)
    g = torch.Generator().manual_seed(config["seed"])
    total = 0.0
    for _ in range(config["local_epochs"]):
        for idx in torch.randperm(len(y), generator=g).split(config["batch_size"]):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
    return net.state_dict(), len(y), {"loss": total}


def held_out(model):
    _, (xt, yt) = tensorguard.datasets.digits(0, 1)
    net = Net()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.items()})
    with torch.no_grad():
        logits = net(torch.from_numpy(xt))
    loss = nn.functional.cross_entropy(logits, torch.from_numpy(yt)).item()
    return loss, {"accuracy": (logits.argmax(1).numpy() == yt).mean().item()}


if __name__ == "__main__":
    torch.manual_seed(0)
    summary = tensorguard.simulation.run(
        app,
        num_clients=CLIENTS,
        rounds=ROUNDS,
        initial_model=Net().state_dict(),
        local_epochs=4,
        batch_size=16,
        learning_rate=0.05,
        dp={"mode": "distributed", "target_epsilon": 8.0, "delta": 1e-5, "clip": 1.0},
        evaluate_fn=held_out,
    )
    for r in summary["history"]:
        print(f"round {r['round']}: {r['status']}, accuracy {r['accuracy']:.3f}, ε {r['epsilon']:.2f}")
    print(
        f"final accuracy {summary['final_accuracy']:.3f}; ε = {summary['epsilon']:.2f} "
        f"(against the coordinator: {summary['epsilon_vs_coordinator']:.2f}); "
        f"model {summary['final_model_sha256'][:16]}…"
    )
