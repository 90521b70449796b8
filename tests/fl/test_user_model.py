"""The public API over a model fedticket does not ship: fedticket.fl.HideNseek & co on the server,
TicketClient in a plain Flower ClientApp, driven through the in-memory Grid."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from torch import nn

import fedticket.fl as ft
from fedticket.fl.memgrid import InMemoryGrid

NUM_NODES = 3


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _data(pid: int, n: int = 60):
    g = torch.Generator().manual_seed(100 + pid)
    y = torch.randint(0, 5, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    return x, y


def _app() -> ClientApp:
    app = ClientApp()
    client = ft.TicketClient(model_fn=TinyNet)

    @app.query()
    def query(msg: Message, context: Context):
        return client.query(msg, context)

    @app.train()
    def train(msg: Message, context: Context):
        return client.train(msg, context, _data(int(context.node_config["partition-id"])))

    @app.evaluate()
    def evaluate(msg: Message, context: Context):
        x, y = _data(int(context.node_config["partition-id"]))
        return client.evaluate(msg, context, torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=16), (x[:20], y[:20]))

    return app


def _run(cls, seed=0, rounds=2):
    strategy = cls(model_fn=TinyNet, input_shape=(1, 8, 8), num_clients=NUM_NODES, seed=seed,
                   density=0.3, prune_iterations=5,
                   options={"eval.personal_every": 1, "train.max_steps": 3})
    grid = InMemoryGrid.for_partitions(_app(), NUM_NODES)
    accs = {}

    def central(r, arrays):
        x, y = _data(99, 40)
        with torch.no_grad():
            accs[r] = float((strategy.global_model(arrays, r)(x).argmax(1) == y).float().mean())

    history = strategy.start(grid, strategy.initial_arrays(), num_rounds=rounds,
                             evaluate_fn=central)
    return strategy, history, accs


@pytest.mark.parametrize("cls", [ft.HideNseek, ft.BinaryMask, ft.FedPM])
def test_one_bit_methods_over_a_user_model(cls):
    strategy, history, accs = _run(cls)
    kept = strategy.ticket.kept
    assert 0 < kept < sum(m.numel() for m in strategy.ticket.mask.values())
    for r in (1, 2):
        st = history.rounds[r]
        assert st.accepted == NUM_NODES and st.rejected == 0 and not st.missing
        assert st.uplink_per_reply == [math.ceil(kept / 8) + 8] * NUM_NODES
        assert st.personalized_accuracy is not None
    assert sorted(accs) == [0, 1, 2]
    # pruned positions of the user's model stay zero in the global model
    params = dict(strategy.global_model(history.arrays, 2).named_parameters())
    for name, m in strategy.ticket.mask.items():
        assert torch.count_nonzero(params[name].detach()[~m]) == 0, name


def test_float_baselines_over_a_user_model_and_same_seed_same_numbers():
    dense, h, accs = _run(ft.FedAvg)
    n = sum(p.numel() for p in TinyNet().state_dict().values())
    assert h.rounds[1].uplink_per_reply == [4 * n + 8] * NUM_NODES
    _, _, again = _run(ft.FedAvg)
    _, _, other = _run(ft.FedAvg, seed=1)
    assert accs == again and accs != other
    sub, hs, _ = _run(ft.FedAvgSubnet)
    biases = sum(p.numel() for p in TinyNet().parameters() if p.ndim < 2)
    assert hs.rounds[1].uplink_per_reply == [4 * (sub.ticket.kept + biases) + 8] * NUM_NODES
