"""Deployment helpers: TLS certificates, SuperNode keys, connections, and the Flower commands.

Nothing here replaces Flower: the SuperLink, the SuperNodes and ``flwr run`` are Flower's own
programs, running the same ``fedticket.fl.server_app:app`` / ``client_app:app`` as the simulation.
These helpers only save typing and get the details right (certificate SANs, OpenSSH EC keys,
``[superlink.NAME]`` entries in ``$FLWR_HOME/config.toml``, the flags of each process), and turn
the mistakes Flower would report late (or not at all) into one :class:`UserError` up front.
``fedticket deploy --help`` lists the steps.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Sequence

from fedticket.errors import UserError
from fedticket.results import atomic_write_bytes

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
DEFAULT_PORT = 8000            # SuperLink: one port for the Fleet, Control and Runtime APIs
DEFAULT_NODE_PORT = 9094       # SuperNode: its own ClientAppIo port, one per SuperNode per host
NO_RUNTIME_INSTALL_ENV = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"
# flower-superlink starts its SuperExec against the bind address with 0.0.0.0/:: swapped for
# loopback (flwr.supercore.address.resolve_bind_address), over TLS: the certificate must name it.
LOOPBACK_SANS = ("127.0.0.1", "::1", "localhost")
_BIND_ALL = {"0.0.0.0": "127.0.0.1", "::": "::1"}
_DNS_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*\.?")


# ---- files -----------------------------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file + rename, so a crash never leaves a half-written key or config."""
    try:
        atomic_write_bytes(path, data, mode=mode)  # mode set before any byte lands
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}; choose another --out") from None


def _write_private(path: Path, data: bytes) -> None:
    _atomic_write(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _atomic_write(path, data, 0o644)


def _out_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose a folder")
    return out


def refuse_overwrite(paths: Sequence[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise UserError(f"{', '.join(existing)} already exist(s); pass --force to replace "
                        "(every SuperNode or SuperLink using the old files must then be updated)")


# ---- hosts and addresses ----------------------------------------------------------------------------
def _parse_host(host: str, what: str, wildcard: bool = False):
    """An ``ipaddress`` object or a lower-case DNS name; UserError for anything else."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    name = host[2:] if wildcard and host.startswith("*.") else host
    if "://" in host or not _DNS_NAME.fullmatch(name) or len(name) > 253 \
            or re.fullmatch(r"[\d.]+", name):
        raise UserError(f"{what} {host!r} is neither an IP address nor a DNS name "
                        "(give e.g. 192.168.1.10 or superlink.example.org, no scheme, no port)")
    return host.lower().rstrip(".")


def parse_address(address: str, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) → (host, port); bind-all hosts are refused (not dialable)."""
    example = f"e.g. 192.168.1.10:{DEFAULT_PORT} or [fd00::1]:{DEFAULT_PORT}"
    if "://" in address:
        raise UserError(f"{what} {address!r}: give HOST:PORT without a scheme, "
                        f"e.g. {address.split('://', 1)[1].rstrip('/')}")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", address)
    if not m:
        raise UserError(f"{what} {address!r} must be HOST:PORT, {example}")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if m.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UserError(f"{what} {address!r}: {host!r} in brackets is not an IPv6 "
                            f"address; {example}") from None
    else:
        _parse_host(host, what)
    if not 1 <= int(port) <= 65535:
        raise UserError(f"{what} {address!r}: port must be in 1..65535")
    if host in _BIND_ALL:
        raise UserError(f"{what} {address!r}: {host} is a listen-on-all address, not one to "
                        "connect to; give the SuperLink's IP or DNS name")
    return host, int(port)


def _check_port(port: int, flag: str) -> None:
    if not 1 <= port <= 65535:
        raise UserError(f"{flag} must be in 1..65535, got {port}")


def _san_entries(hosts: Sequence[str]):
    from cryptography import x509

    given = [h.strip() for spec in hosts for h in spec.split(",") if h.strip()]
    if not given:
        raise UserError("give at least one --host (the SuperLink's IP or DNS name as the "
                        "SuperNodes and flwr will dial it, e.g. --host 192.168.1.10)")
    out, seen = [], set()
    for h in [*given, *LOOPBACK_SANS]:
        parsed = _parse_host(h, "--host", wildcard=True)
        if str(parsed) in _BIND_ALL:
            raise UserError(f"--host {h}: a certificate names addresses clients dial, not "
                            "0.0.0.0/::; give the SuperLink's IP or DNS name")
        if str(parsed) in seen:
            continue
        seen.add(str(parsed))
        out.append(x509.DNSName(parsed) if isinstance(parsed, str) else x509.IPAddress(parsed))
    return out


# ---- certificates and keys --------------------------------------------------------------------------
def make_certs(out_dir: str | Path, hosts: Sequence[str], days: int = 365,
               force: bool = False) -> dict[str, Path]:
    """A private CA and a SuperLink certificate signed by it, valid for ``hosts`` (IPs or names).

    Writes ``ca.crt`` (give it to every SuperNode, to ``flwr`` and to the SuperLink), ``ca.key``
    (keep offline), ``server.crt`` and ``server.key`` (the SuperLink's). The server certificate
    also names 127.0.0.1, ::1 and localhost, which the SuperLink's own SuperExec dials.
    EC P-256 keys, SHA-256 signatures.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if days < 1:
        raise UserError(f"--days must be >= 1, got {days}")
    out = _out_dir(out_dir)
    paths = {k: out / k for k in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)}
    sans = _san_entries(hosts)
    refuse_overwrite(list(paths.values()), force)
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)  # tolerate clock skew
    until = now + _dt.timedelta(days=days)

    def usage(**on):
        flags = ("digital_signature", "content_commitment", "key_encipherment",
                 "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                 "encipher_only", "decipher_only")
        return x509.KeyUsage(**{f: on.get(f, False) for f in flags})

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedticket federation CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(until)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    # CN is informational (clients match SANs) and capped at 64 chars: never a long host name
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                        "fedticket superlink")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            # Python 3.13's default SSL context (VERIFY_X509_STRICT) rejects a leaf without AKI
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    _write_private(paths[CA_KEY], ca_key.private_bytes(pem, pkcs8, none))
    _write_public(paths[CA_CERT], ca_cert.public_bytes(pem))
    _write_private(paths[SERVER_KEY], key.private_bytes(pem, pkcs8, none))
    _write_public(paths[SERVER_CERT], cert.public_bytes(pem))
    return paths


def cert_hosts(cert_path: str | Path) -> list[str]:
    """The DNS names and IPs a certificate is valid for, as text."""
    from cryptography import x509

    cert = _load_cert(Path(cert_path))
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*sans.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))]


def _check_key_name(name: str) -> None:
    # a leading '.'/'-' would allow '..' or look like a flag; '.pub' would collide with a pair
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name) or name.endswith(".pub"):
        raise UserError(f"key name {name!r}: start with a letter or digit, then letters, digits, "
                        "'.', '_' or '-' (no '.pub' ending), e.g. node-0")


def node_key_paths(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    _check_key_name(name)
    out = _out_dir(out_dir)
    return out / name, out / f"{name}.pub"


def make_node_key(out_dir: str | Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """One SuperNode's EC (P-384) key pair in OpenSSH format: ``NAME`` (private) and ``NAME.pub``.

    ``flwr supernode register NAME.pub`` admits the device; ``flower-supernode
    --auth-supernode-private-key NAME`` proves it. The private key never leaves the device.
    Both Flower ends read these with ``cryptography``'s ``load_ssh_public_key`` /
    ``load_ssh_private_key(data, None)`` and require a NIST EC curve.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    priv, pub = node_key_paths(out_dir, name)
    refuse_overwrite([priv, pub], force)
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(priv, key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    _write_public(pub, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH)
                  + f" fedticket-{name}\n".encode())
    return priv, pub


# ---- $FLWR_HOME/config.toml ----------------------------------------------------------------------
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
        _load_cert(ca, "--root-certificates")
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
    _atomic_write(path, text.encode(), 0o600 if not path.exists() else path.stat().st_mode & 0o777)
    return path


# ---- the Flower process command lines ------------------------------------------------------------
def _load_cert(path: Path, what: str = "certificate"):
    from cryptography import x509

    if not path.is_file():
        raise UserError(f"{what} {path} does not exist (make it with `fedticket deploy certs`)")
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise UserError(f"{what} {path} is not a PEM certificate; pass the .crt that "
                        "`fedticket deploy certs` made") from None


def _covers(cert, host: str) -> bool:
    from cryptography import x509

    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        return ipaddress.ip_address(host) in sans.get_values_for_type(x509.IPAddress)
    except ValueError:
        pass
    host = host.lower().rstrip(".")
    for n in sans.get_values_for_type(x509.DNSName):
        n = n.lower().rstrip(".")
        if n == host or (n.startswith("*.") and host.partition(".")[2] == n[2:]):
            return True
    return False


def _cert_dir(certs, host: str) -> Path:
    """The SuperLink's certificate folder, checked: files present, matching, naming ``host``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if certs is None:
        raise UserError("a TLS SuperLink needs --certs DIR (made by `fedticket deploy certs`), "
                        "or --insecure --no-auth for a trusted lab network")
    d = Path(certs).expanduser().resolve()
    redo = f"`fedticket deploy certs --out {d} --host <SuperLink IP or name> --force`"
    missing = [n for n in (CA_CERT, SERVER_CERT, SERVER_KEY) if not (d / n).is_file()]
    if missing:
        raise UserError(f"{d} lacks {', '.join(missing)}; make them with "
                        f"`fedticket deploy certs --out {d} --host <SuperLink IP or name>`")
    ca, cert = _load_cert(d / CA_CERT), _load_cert(d / SERVER_CERT)
    try:
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                               ec.ECDSA(cert.signature_hash_algorithm))
        key = serialization.load_pem_private_key((d / SERVER_KEY).read_bytes(), None)
        matches = key.public_key() == cert.public_key()
    except Exception:  # any mismatch in type, curve, signature or format: same remedy
        matches = False
    if not matches:
        raise UserError(f"{d}: {SERVER_CERT}, {SERVER_KEY} and {CA_CERT} are not one set (mixed "
                        f"from different runs?); remake them with {redo}")
    dial = _BIND_ALL.get(host, host)
    if not _covers(cert, dial):
        raise UserError(f"{d / SERVER_CERT} is not valid for {dial}, which the SuperLink's "
                        f"SuperExec connects to for --host {host}; remake the certificates "
                        f"(newer ones always include 127.0.0.1, ::1, localhost) with {redo}")
    return d


def superlink_command(certs: str | Path | None, database: str | Path, port: int = DEFAULT_PORT,
                      host: str = "0.0.0.0", auth: bool = True, insecure: bool = False
                      ) -> list[str]:
    """``flower-superlink`` with TLS (unless ``insecure``) and SuperNode authentication."""
    _check_port(port, "--port")
    host = host.strip("[]")  # flower-superlink adds the brackets itself
    if host not in _BIND_ALL:
        _parse_host(host, "--host")
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
        d = _cert_dir(certs, host)
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
    _check_port(port, "--port")
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
        _load_cert(ca, "--root-certificates")
        cmd += ["--root-certificates", str(ca)]
    if key is not None:
        k = Path(key).expanduser().resolve()
        _check_private_key(k)
        cmd += ["--auth-supernode-private-key", str(k)]
    if max_wait_time is not None:
        cmd += ["--max-wait-time", str(max_wait_time)]
    return cmd


def _check_private_key(k: Path) -> None:
    """Load it as flower-supernode will, so a wrong file fails here and not after start-up."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    if not k.is_file():
        raise UserError(f"SuperNode private key {k} does not exist (make it with "
                        "`fedticket deploy keys NAME --out DIR`)")
    hint = f"; pass the private key {k.with_suffix('')}" if k.suffix == ".pub" else \
        " (pass the NAME file from `fedticket deploy keys`, not NAME.pub)"
    try:
        ok = isinstance(load_ssh_private_key(k.read_bytes(), None), ec.EllipticCurvePrivateKey)
    except Exception:  # wrong format, encrypted, unsupported: same remedy
        ok = False
    if not ok:
        raise UserError(f"--key {k} is not an unencrypted OpenSSH EC private key{hint}")


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
