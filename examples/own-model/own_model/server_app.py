"""The ServerApp: one of fedticket's strategies over this app's model, evaluated centrally."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

import fedticket.fl as ft
from own_model.task import INPUT_SHAPE, Net, accuracy, data_root, load_split

STRATEGIES = {"hidenseek": ft.HideNseek, "binary-mask": ft.BinaryMask, "fedpm": ft.FedPM,
              "fedavg": ft.FedAvg, "fedavg-subnet": ft.FedAvgSubnet}

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    num_nodes = int(cfg["num-clients"])   # = num-supernodes: one data partition per node
    strategy = STRATEGIES[str(cfg["method"])](
        model_fn=Net, input_shape=INPUT_SHAPE, num_clients=num_nodes,
        clients_per_round=min(int(cfg["clients-per-round"]), num_nodes),
        seed=int(cfg["seed"]), density=float(cfg["density"]),
        options={"train.lr": float(cfg["lr"]), "eval.personal_every": 1,
                 "server.connect_timeout": 60.0})
    x_test, y_test = load_split(str(cfg["data-root"]), False, int(cfg["test-examples"]),
                                int(cfg["seed"]))

    def central(server_round, arrays):
        return MetricRecord({"accuracy": accuracy(strategy.global_model(arrays, server_round),
                                                  x_test, y_test)})

    history = strategy.start(grid, strategy.initial_arrays(),
                             num_rounds=int(cfg["num-server-rounds"]), evaluate_fn=central)
    rounds = {r: {"accuracy": float(m["accuracy"]),
                  "uplink_bytes": history.rounds[r].uplink_bytes if r in history.rounds else 0,
                  "personalized_accuracy": history.rounds[r].personalized_accuracy
                  if r in history.rounds else None}
              for r, m in sorted(history.evaluate_metrics_serverapp.items())}
    print(f"{cfg['method']} over own_model.Net ({'FashionMNIST' if data_root(str(cfg['data-root'])) else 'synthetic data'}): "
          f"accuracy {rounds[0]['accuracy']:.4f} -> {rounds[max(rounds)]['accuracy']:.4f}")
    if str(cfg["output"]):
        Path(str(cfg["output"])).write_text(json.dumps(
            {"method": str(cfg["method"]), "nodes": num_nodes,
             "kept_weights": strategy.ticket.kept, "rounds": rounds}, indent=1))
