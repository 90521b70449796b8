"""Host names, IP addresses and ports as the SuperLink, SuperNodes and ``flwr`` dial them."""

from __future__ import annotations

import ipaddress
import re

from fedticket.errors import UserError

DEFAULT_PORT = 8000            # SuperLink: one port for the Fleet, Control and Runtime APIs
DEFAULT_NODE_PORT = 9094       # SuperNode: its own ClientAppIo port, one per SuperNode per host
# flower-superlink starts its SuperExec against the bind address with 0.0.0.0/:: swapped for
# loopback (flwr.supercore.address.resolve_bind_address), over TLS: the certificate must name it.
LOOPBACK_SANS = ("127.0.0.1", "::1", "localhost")
BIND_ALL = {"0.0.0.0": "127.0.0.1", "::": "::1"}
_DNS_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*\.?")


def parse_host(host: str, what: str, wildcard: bool = False):
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
        parse_host(host, what)
    if not 1 <= int(port) <= 65535:
        raise UserError(f"{what} {address!r}: port must be in 1..65535")
    if host in BIND_ALL:
        raise UserError(f"{what} {address!r}: {host} is a listen-on-all address, not one to "
                        "connect to; give the SuperLink's IP or DNS name")
    return host, int(port)


def check_port(port: int, flag: str) -> None:
    if not 1 <= port <= 65535:
        raise UserError(f"{flag} must be in 1..65535, got {port}")
