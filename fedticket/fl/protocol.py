"""What the ServerApp and the ClientApp say to each other: record names, config keys, the setup.

Both apps import this module and nothing of each other. A message from the server carries

* ``GLOBAL``  ArrayRecord ``{"payload": Array}``: the round's global payload (:mod:`~fedticket.fl.wire`)
* ``CONFIG``  ConfigRecord: ``ROUND``, ``PARTITION``, ``RUN_KEY``, ``COMPLETED``, and
  ``ASSIGNED`` when the server numbers the nodes itself (simulation): then ``PARTITION`` is the
  partition the node plays, whatever its node config says (:func:`partition_of`)
* ``SETUP``   ArrayRecord, only until the node has acknowledged it: the run config as JSON + the
  SynFlow mask in core's one serialisation (:meth:`fedticket.core.Mask.encode`)

and a reply carries ``METRICS`` (``NUM_EXAMPLES`` and ``ROUND`` always) and, for training,
``UPDATE`` ``{"payload": Array}``. A discovery (``query``) reply carries ``METRICS`` with
``PARTITION`` and ``NUM_PARTITIONS``.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedticket.core.mask import Mask
from fedticket.fl import wire

GLOBAL = "global"    # ArrayRecord name of the model payload the server sends
UPDATE = "update"    # ArrayRecord name of the payload a client sends back
SETUP = "setup"      # ArrayRecord name of the one-time setup (config + mask)
METRICS = "metrics"  # MetricRecord name of every reply
CONFIG = "config"    # ConfigRecord name of every server message
PAYLOAD = "payload"  # the one Array inside GLOBAL / UPDATE

# ConfigRecord keys (server -> client)
ROUND = "round"
PARTITION = "partition-id"
NUM_PARTITIONS = "num-partitions"
RUN_KEY = "run-key"            # keys the clients' on-disk local state
COMPLETED = "completed-round"  # last round whose server checkpoint is on disk
ASSIGNED = "assigned-partition"  # true: PARTITION was assigned by the server (simulation)

# MetricRecord keys (client -> server)
NUM_EXAMPLES = "num-examples"
ACCURACY = "accuracy"

_JSON = "fedticket.json"


def make_setup(config_json: str, mask: Mask) -> ArrayRecord:
    """The one-time setup: the run config (with the seed) + the mask (layout + packed bits)."""
    layout, bits = mask.encode()
    return ArrayRecord({
        "config": wire.raw_array(config_json.encode(), _JSON),
        "layout": wire.raw_array(layout, _JSON),
        "mask": wire.raw_array(bits, wire.BITS),
    })


def read_setup(record: ArrayRecord) -> tuple[str, bytes, bytes]:
    """(config JSON, mask layout, mask bits) of a setup record; ``Mask.decode(layout, bits)``."""
    return (bytes(record["config"].data).decode(), bytes(record["layout"].data),
            bytes(record["mask"].data))


def server_message(global_arrays: ArrayRecord, server_round: int, partition_id: int,
                   run_key: str, completed_round: int, setup: ArrayRecord | None,
                   assigned: bool = False) -> RecordDict:
    config = ConfigRecord({ROUND: server_round, PARTITION: partition_id, RUN_KEY: run_key,
                           COMPLETED: completed_round})
    if assigned:
        config[ASSIGNED] = True
    content = RecordDict({GLOBAL: global_arrays, CONFIG: config})
    if setup is not None:
        content[SETUP] = setup
    return content


def partition_of(msg, context) -> int:
    """The partition a node plays for ``msg``: the server's assignment if it made one (the
    simulation numbers nodes itself, so it never has to ask every node), else the node's own
    ``partition-id`` node config."""
    records = msg.content.config_records
    config = records[CONFIG] if CONFIG in records else None
    if config is not None and config.get(ASSIGNED):
        return int(config[PARTITION])
    return int(context.node_config[PARTITION])
