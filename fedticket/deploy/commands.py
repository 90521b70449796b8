"""The Flower programs' command lines (``flower-superlink``, ``flower-supernode``, ``flwr``).

Built from checked inputs so that a mistake Flower would report late (or not at all) is one
:class:`UserError` up front; :func:`flwr_json` is the one reader of ``flwr ... --format json``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from fedticket.deploy.addresses import (
    BIND_ALL,
    DEFAULT_NODE_PORT,
    DEFAULT_PORT,
    check_port,
    parse_address,
    parse_host,
)
from fedticket.deploy.pki import (
    CA_CERT,
    SERVER_CERT,
    SERVER_KEY,
    check_cert_dir,
    check_private_key,
    load_cert,
)
from fedticket.errors import UserError

NO_RUNTIME_INSTALL_ENV = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"


def superlink_command(certs: str | Path | None, database: str | Path, port: int = DEFAULT_PORT,
                      host: str = "0.0.0.0", auth: bool = True, insecure: bool = False
                      ) -> list[str]:
    """``flower-superlink`` with TLS (unless ``insecure``) and SuperNode authentication."""
    check_port(port, "--port")
    host = host.strip("[]")  # flower-superlink adds the brackets itself
    if host not in BIND_ALL:
        parse_host(host, "--host")
    db = Path(database).expanduser().resolve()
    if db.is_dir():
        raise UserError(f"--database {db} is a folder; give a file, e.g. {db / 'superlink.db'}")
    if not db.parent.is_dir():
        raise UserError(f"--database {db}: folder {db.parent} does not exist; create it first "
                        f"(mkdir -p {shlex.quote(str(db.parent))})")
    # the environment is already installed: no `uv sync` of the app's dependencies per run
    cmd = ["flower-superlink", "--host", host, "--port", str(port), "--database", str(db),
           "--disable-runtime-dependency-installation"]
    if insecure:
        if auth:
            raise UserError("SuperNode authentication needs TLS: drop --insecure or pass --no-auth")
        if certs is not None:
            raise UserError("--insecure turns TLS off, so --certs would be ignored; drop one")
        cmd.append("--insecure")
    else:
        d = check_cert_dir(certs, host)
        cmd += ["--ssl-ca-certfile", str(d / CA_CERT), "--ssl-certfile", str(d / SERVER_CERT),
                "--ssl-keyfile", str(d / SERVER_KEY)]
    if auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def _node_config_value(key: str, path: str | Path) -> str:
    # Flower splits --node-config with r'"[^"]*"' and parses each pair as TOML
    p = str(Path(path).expanduser().resolve())
    if Path(p).exists() and not Path(p).is_dir():
        raise UserError(f"--{key} {p} is a file; give a folder")
    if '"' in p or any(ord(c) < 32 for c in p):
        raise UserError(f"--{key} {p!r}: Flower's --node-config cannot carry a path with a "
                        "double quote or control character; choose another folder")
    return f' {key}="{p.replace(chr(92), chr(92) * 2)}"'


def supernode_command(superlink: str, partition_id: int, num_partitions: int,
                      root_certificates: str | Path | None = None, key: str | Path | None = None,
                      port: int = DEFAULT_NODE_PORT, data_root: str | Path | None = None,
                      insecure: bool = False, max_wait_time: float | None = None,
                      state_dir: str | Path | None = None) -> list[str]:
    """``flower-supernode`` for one device: its partition, its ClientAppIo port, its key.

    ``state_dir`` becomes node config ``state-dir``: where the ClientApp keeps its local state so
    that a resumed run continues from it.
    """
    parse_address(superlink, "--superlink")
    check_port(port, "--port")
    if num_partitions < 1:
        raise UserError(f"--num-partitions must be >= 1 (the number of SuperNodes sharing the "
                        f"data), got {num_partitions}")
    if not 0 <= partition_id < num_partitions:
        raise UserError(f"--partition-id must be in 0..{num_partitions - 1} for "
                        f"--num-partitions {num_partitions}, got {partition_id}")
    node_config = f"partition-id={partition_id} num-partitions={num_partitions}"
    if data_root:
        node_config += _node_config_value("data-root", data_root)
    if state_dir:
        node_config += _node_config_value("state-dir", state_dir)
    cmd = ["flower-supernode", "--superlink", superlink, "--port", str(port),
           "--node-config", node_config]
    if insecure:
        if root_certificates is not None:
            raise UserError("give exactly one of --root-certificates CA.crt (TLS) or --insecure "
                            "(plain text, for a trusted lab network only)")
        if key is not None:
            raise UserError("SuperNode authentication (--key) needs TLS: drop --insecure and "
                            "pass --root-certificates CA.crt, or drop --key")
        cmd.append("--insecure")
    else:
        if root_certificates is None:
            raise UserError("give exactly one of --root-certificates CA.crt (TLS, the CA from "
                            "`fedticket deploy certs`) or --insecure (trusted lab network only)")
        ca = Path(root_certificates).expanduser().resolve()
        load_cert(ca, "--root-certificates")
        cmd += ["--root-certificates", str(ca)]
    if key is not None:
        k = Path(key).expanduser().resolve()
        check_private_key(k)
        cmd += ["--auth-supernode-private-key", str(k)]
    if max_wait_time is not None:
        cmd += ["--max-wait-time", str(max_wait_time)]
    return cmd



def shell(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def exec_command(cmd: Sequence[str]) -> None:
    """Replace this process with ``cmd`` (signals and exit code then belong to Flower's program)."""
    if shutil.which(cmd[0]) is None:
        raise UserError(f"{cmd[0]} is not on PATH; activate the environment where flwr>=1.42 "
                        "is installed (or use --print and run the line elsewhere)")
    os.environ.setdefault(NO_RUNTIME_INSTALL_ENV, "1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], list(cmd))


def flwr_json(stdout: str) -> dict:
    """The JSON object that ``flwr ... --format json`` prints (after any banner lines).

    Raises ``ValueError`` when there is none: a caller that polls treats that as "not yet".
    """
    start = stdout.find("{")
    if start < 0:
        raise ValueError(f"no JSON object in flwr's output: {stdout[-500:]!r}")
    obj, _end = json.JSONDecoder().raw_decode(stdout[start:])
    if not isinstance(obj, dict):
        raise ValueError(f"flwr printed {type(obj).__name__}, not a JSON object")
    return obj


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string


def run_config_arg(cfg: Mapping[str, Any]) -> str:
    """``{"rounds": 3, "data.root": "/d"}`` -> ``rounds=3 data.root="/d"`` for ``--run-config``."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in cfg.items())
