"""The ClientApp: fedticket's TicketClient turns this app's model and data into the replies."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedticket.fl import TicketClient
from own_model.task import Net, load_partition

app = ClientApp()
client = TicketClient(model_fn=Net)      # the factory the ServerApp prunes: weights never travel


def _data(msg: Message, context: Context):
    cfg = context.run_config
    # the partition this node plays: in simulation the server assigns it (server.partitions)
    return load_partition(str(cfg["data-root"]), client.partition(msg, context),
                          int(context.node_config["num-partitions"]),
                          int(cfg["train-examples"]), int(cfg["seed"]))


@app.query()
def query(msg: Message, context: Context) -> Message:
    return client.query(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    x, y, _, _ = _data(msg, context)
    return client.train(msg, context, (x, y))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    x, y, xv, yv = _data(msg, context)
    return client.evaluate(msg, context, (x, y), (xv, yv))
