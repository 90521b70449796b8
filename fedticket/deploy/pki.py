"""The federation's PKI: a private CA, the SuperLink's TLS certificate, SuperNode key pairs.

EC keys (P-256 for TLS, P-384 for SuperNode authentication, as Flower requires a NIST curve),
written atomically with private files at mode 0600 from their first byte; and the checks that
turn a wrong or mixed-up file into one :class:`UserError` before a Flower process starts.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
from pathlib import Path
from typing import Sequence

from fedticket.deploy.addresses import BIND_ALL, LOOPBACK_SANS, parse_host
from fedticket.errors import UserError
from fedticket.results import atomic_write_bytes, check_output_dir

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"


# ---- files -----------------------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file + rename, so a crash never leaves a half-written key or config."""
    try:
        atomic_write_bytes(path, data, mode=mode)  # mode set before any byte lands
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}; choose another --out") from None


def _write_private(path: Path, data: bytes) -> None:
    write_atomic(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    write_atomic(path, data, 0o644)


def _out_dir(out_dir: str | Path) -> Path:
    # a file, a path under a file, an unwritable place: refused before any key is generated;
    # existing key files are refuse_overwrite's business (--force), not a results folder's
    return check_output_dir(Path(out_dir).expanduser().resolve(), overwrite=True)


def refuse_overwrite(paths: Sequence[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise UserError(f"{', '.join(existing)} already exist(s); pass --force to replace "
                        "(every SuperNode or SuperLink using the old files must then be updated)")


def _san_entries(hosts: Sequence[str]):
    from cryptography import x509

    given = [h.strip() for spec in hosts for h in spec.split(",") if h.strip()]
    if not given:
        raise UserError("give at least one --host (the SuperLink's IP or DNS name as the "
                        "SuperNodes and flwr will dial it, e.g. --host 192.168.1.10)")
    out, seen = [], set()
    for h in [*given, *LOOPBACK_SANS]:
        parsed = parse_host(h, "--host", wildcard=True)
        if str(parsed) in BIND_ALL:
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

    cert = load_cert(Path(cert_path))
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


# ---- checks ------------------------------------------------------------------------------------
def load_cert(path: Path, what: str = "certificate"):
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


def check_cert_dir(certs, host: str) -> Path:
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
    ca, cert = load_cert(d / CA_CERT), load_cert(d / SERVER_CERT)
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
    dial = BIND_ALL.get(host, host)
    if not _covers(cert, dial):
        raise UserError(f"{d / SERVER_CERT} is not valid for {dial}, which the SuperLink's "
                        f"SuperExec connects to for --host {host}; remake the certificates "
                        f"(newer ones always include 127.0.0.1, ::1, localhost) with {redo}")
    return d



def check_private_key(k: Path) -> None:
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
