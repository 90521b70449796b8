"""``$FLWR_HOME/config.toml``: add or replace one ``[superlink.NAME]`` connection, keep the rest."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from fedticket.deploy.addresses import parse_address
from fedticket.deploy.pki import load_cert, write_atomic
from fedticket.errors import UserError


def flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()


def _toml_loads(text: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10; flwr depends on tomli
        import tomli as tomllib
    return tomllib.loads(text)


def _flower_default_config() -> str:
    # flwr writes its defaults (the "local" simulation connection) only when config.toml is
    # missing; creating the file ourselves would otherwise lose them
    try:
        from flwr.cli.constant import DEFAULT_FLOWER_CONFIG_TOML
    except ImportError:
        return ""
    return DEFAULT_FLOWER_CONFIG_TOML


def _connections(doc: dict) -> dict:
    s = doc.get("superlink")
    return s if isinstance(s, dict) else {}


def _drop_tables(text: str, name: str) -> str:
    """Remove ``[superlink.NAME]`` and its sub-tables, each up to the next table header."""
    own = re.compile(rf"\s*\[\s*superlink\s*\.\s*{re.escape(name)}\s*(\.[^\]]*)?\]\s*(#.*)?")
    keep, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("["):
            skipping = bool(own.fullmatch(line.rstrip("\r\n")))
        if not skipping:
            keep.append(line)
    return "".join(keep)


def write_connection(name: str, address: str, root_certificates: str | Path | None = None,
                     insecure: bool = False, home: str | Path | None = None) -> Path:
    """Add or replace ``[superlink.NAME]`` in ``$FLWR_HOME/config.toml`` (other entries kept).

    A new config.toml starts from Flower's defaults; ``NAME`` becomes the default connection only
    where no ``[superlink]`` table existed (``flwr run . NAME`` picks it explicitly anyway).
    """
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name) or name == "default":
        raise UserError(f"connection name {name!r} may use letters, digits, '_' and '-' only "
                        "(and is not 'default'), e.g. fedticket")
    parse_address(address, "--address")
    if insecure == (root_certificates is not None):
        raise UserError("give exactly one of --root-certificates CA.crt (TLS, the default "
                        "recipe) or --insecure (plain text, for a trusted lab network only)")
    entry: dict = {"address": address}
    if insecure:
        entry["insecure"] = True
    else:
        ca = Path(root_certificates).expanduser().resolve()
        load_cert(ca, "--root-certificates")
        entry["root-certificates"] = str(ca)  # flwr requires an absolute path here

    path = Path(home).expanduser() if home else flwr_home()
    path = path / "config.toml"
    old = path.read_text() if path.exists() else _flower_default_config()
    try:
        before = _toml_loads(old)
    except ValueError as e:
        raise UserError(f"{path} is not valid TOML ({e}); fix or move it, then rerun") from None
    text = _drop_tables(old, name).rstrip("\n")
    if "superlink" not in before:
        # appended, not prepended: a table header on top would capture the file's root keys
        text += f'\n\n[superlink]\ndefault = {json.dumps(name)}'
    # json.dumps gives a valid TOML basic string (quotes, backslashes, control chars escaped)
    body = "\n".join(f"{k} = {'true' if v is True else json.dumps(v)}" for k, v in entry.items())
    text = f"{text}\n\n[superlink.{name}]\n{body}\n".lstrip("\n")

    try:
        after = _connections(_toml_loads(text))
    except ValueError:
        after = None
    old_conns = _connections(before)
    if after is None or after.get(name) != entry or \
            any(after.get(k) != v for k, v in old_conns.items() if k != name):
        raise UserError(f"could not update {path} safely ([superlink.{name}] is written in a way "
                        f"this tool does not edit); edit it by hand: under [superlink.{name}] set "
                        f"{body.replace(chr(10), ', ')}")
    write_atomic(path, text.encode(), 0o600 if not path.exists() else path.stat().st_mode & 0o777)
    return path
