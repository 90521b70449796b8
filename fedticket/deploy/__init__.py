"""Deployment operations of a real (non-simulated) Flower federation, outside the FL library.

Nothing here replaces Flower: the SuperLink, the SuperNodes and ``flwr run`` are Flower's own
programs, running the same ``fedticket.fl.server_app:app`` / ``client_app:app`` as the simulation.
These modules only save typing and get the details right, and turn the mistakes Flower would
report late (or not at all) into one :class:`~fedticket.errors.UserError` up front:

- :mod:`~fedticket.deploy.addresses`: hosts, ``HOST:PORT``, ports;
- :mod:`~fedticket.deploy.pki`: the private CA, the SuperLink certificate, SuperNode key pairs;
- :mod:`~fedticket.deploy.flwrconf`: ``[superlink.NAME]`` entries in ``$FLWR_HOME/config.toml``;
- :mod:`~fedticket.deploy.commands`: the Flower command lines and the reader of ``flwr`` JSON;
- :mod:`~fedticket.deploy.poll`: the one wait-until loop;
- :mod:`~fedticket.deploy.localfed`: a whole federation as processes on 127.0.0.1.

Import direction: this room may import ``fedticket.fl`` (its config, to validate a run before
any process starts); ``fedticket.fl`` never imports it (tests/test_architecture.py).
"""

from fedticket.deploy.addresses import DEFAULT_NODE_PORT, DEFAULT_PORT, parse_address
from fedticket.deploy.commands import (
                                       NO_RUNTIME_INSTALL_ENV,
                                       exec_command,
                                       flwr_json,
                                       shell,
                                       superlink_command,
                                       supernode_command,
)
from fedticket.deploy.flwrconf import flwr_home, write_connection
from fedticket.deploy.pki import (
                                       CA_CERT,
                                       CA_KEY,
                                       SERVER_CERT,
                                       SERVER_KEY,
                                       cert_hosts,
                                       make_certs,
                                       make_node_key,
                                       node_key_paths,
                                       refuse_overwrite,
)
from fedticket.deploy.poll import poll_until

__all__ = ["CA_CERT", "CA_KEY", "DEFAULT_NODE_PORT", "DEFAULT_PORT", "NO_RUNTIME_INSTALL_ENV",
           "SERVER_CERT", "SERVER_KEY", "cert_hosts", "exec_command", "flwr_home", "flwr_json",
           "make_certs", "make_node_key", "node_key_paths", "parse_address", "poll_until",
           "refuse_overwrite", "shell", "superlink_command", "supernode_command",
           "write_connection"]
