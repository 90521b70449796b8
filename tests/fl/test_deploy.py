"""``fedticket deploy``: certificates, SuperNode keys, flwr connections, Flower command lines.

No network beyond 127.0.0.1 and no Flower process: where Flower's own parsers are importable the
outputs are fed to them, so a Flower upgrade that changes a format fails here.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedticket import deploy
from fedticket.cli import main
from fedticket.deploy import commands
from fedticket.errors import UserError

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    deploy.make_certs(out, ["192.168.1.10", "superlink.example.org"])
    return out


@pytest.fixture(scope="module")
def node_key(tmp_path_factory) -> tuple[Path, Path]:
    return deploy.make_node_key(tmp_path_factory.mktemp("keys"), "node-0")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# ---- certificates --------------------------------------------------------------------------------
def test_make_certs_files_and_modes(certs):
    for name in (deploy.CA_CERT, deploy.CA_KEY, deploy.SERVER_CERT, deploy.SERVER_KEY):
        assert (certs / name).is_file()
    for name in (deploy.CA_KEY, deploy.SERVER_KEY):
        assert stat.S_IMODE((certs / name).stat().st_mode) == 0o600


def test_server_cert_chains_to_ca_and_names_hosts(certs):
    ca, cert = _cert(certs / deploy.CA_CERT), _cert(certs / deploy.SERVER_CERT)
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                           ec.ECDSA(cert.signature_hash_algorithm))
    assert cert.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = sans.get_values_for_type(x509.IPAddress)
    dns = sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("192.168.1.10") in ips
    assert "superlink.example.org" in dns
    # the SuperLink's own SuperExec dials 127.0.0.1 (for --host 0.0.0.0) over TLS
    assert ipaddress.ip_address("127.0.0.1") in ips and "localhost" in dns
    key = serialization.load_pem_private_key((certs / deploy.SERVER_KEY).read_bytes(), None)
    assert key.public_key() == cert.public_key()


def test_make_certs_refuses_overwrite_unless_forced(tmp_path):
    deploy.make_certs(tmp_path, ["10.0.0.1"])
    before = (tmp_path / deploy.CA_CERT).read_bytes()
    with pytest.raises(UserError, match="--force"):
        deploy.make_certs(tmp_path, ["10.0.0.1"])
    assert (tmp_path / deploy.CA_CERT).read_bytes() == before
    deploy.make_certs(tmp_path, ["10.0.0.1"], force=True)
    assert (tmp_path / deploy.CA_CERT).read_bytes() != before


@pytest.mark.parametrize("hosts", [["bad host"], ["https://x.org"], ["-x.org"], ["0.0.0.0"],
                                   ["999.1.1.1"], []])
def test_make_certs_bad_host(tmp_path, hosts):
    with pytest.raises(UserError, match="--host"):
        deploy.make_certs(tmp_path, hosts)
    assert not any(tmp_path.iterdir())


def test_tls_handshake_with_python_ssl(certs):
    """Flower 1.42 serves with uvicorn and dials with httpx: both are Python's ssl module."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs / deploy.SERVER_CERT, certs / deploy.SERVER_KEY)
    client = ssl.create_default_context(cafile=str(certs / deploy.CA_CERT))
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default; ours may be older
    assert client.check_hostname

    def handshake(name: str) -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(5)
            errors = []

            def serve():
                try:
                    conn, _ = listener.accept()
                    with server.wrap_socket(conn, server_side=True) as s:
                        s.sendall(b"ok")
                except (OSError, ssl.SSLError) as e:
                    errors.append(e)

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            try:
                with socket.create_connection(listener.getsockname(), timeout=5) as raw, \
                        client.wrap_socket(raw, server_hostname=name) as s:
                    assert s.recv(2) == b"ok"
            finally:
                t.join(5)

    for name in ("127.0.0.1", "localhost", "superlink.example.org", "192.168.1.10"):
        handshake(name)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("other.example.org")


# ---- SuperNode keys ------------------------------------------------------------------------------
def test_node_key_loads_as_flower_loads_it(node_key):
    priv_path, pub_path = node_key
    # exactly flwr/supernode/cli/flower_supernode.py and flwr/cli/supernode/register.py (1.42)
    priv = serialization.load_ssh_private_key(priv_path.read_bytes(), None)
    pub = serialization.load_ssh_public_key(pub_path.read_bytes())
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    assert priv.public_key() == pub
    assert pub.curve.name == "secp384r1"
    assert stat.S_IMODE(priv_path.stat().st_mode) == 0o600


def test_node_key_accepted_by_flower_register(node_key):
    register = pytest.importorskip("flwr.cli.supernode.register")
    assert register.try_load_public_key(node_key[1])  # exits on a key Flower rejects


def test_node_key_overwrite_and_bad_name(tmp_path):
    deploy.make_node_key(tmp_path, "a")
    with pytest.raises(UserError, match="--force"):
        deploy.make_node_key(tmp_path, "a")
    deploy.make_node_key(tmp_path, "a", force=True)
    for bad in ("..", "-a", "a/b", "a.pub", ""):
        with pytest.raises(UserError, match="key name"):
            deploy.make_node_key(tmp_path, bad)


# ---- $FLWR_HOME/config.toml ------------------------------------------------------------------------
def test_write_connection_adds_and_replaces(tmp_path, certs):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
                   'options.num-supernodes = 10\n\n[other]\nx = 1\n')
    ca = certs / deploy.CA_CERT
    path = deploy.write_connection("fed", "192.168.1.10:8000", root_certificates=ca, home=tmp_path)
    assert path == cfg
    doc = tomllib.loads(cfg.read_text())
    assert doc["superlink"]["fed"] == {"address": "192.168.1.10:8000",
                                       "root-certificates": str(ca.resolve())}
    assert Path(doc["superlink"]["fed"]["root-certificates"]).is_absolute()

    deploy.write_connection("fed", "[fd00::1]:9000", insecure=True, home=tmp_path)
    text = cfg.read_text()
    assert text.count("[superlink.fed]") == 1
    doc = tomllib.loads(text)
    assert doc["superlink"]["fed"] == {"address": "[fd00::1]:9000", "insecure": True}
    assert doc["superlink"]["default"] == "local"
    assert doc["superlink"]["local"] == {"address": ":local:", "options": {"num-supernodes": 10}}
    assert doc["other"] == {"x": 1}


def test_write_connection_new_file_keeps_flower_defaults(tmp_path, certs):
    deploy.write_connection("fed", "superlink.example.org:8000",
                            root_certificates=certs / deploy.CA_CERT, home=tmp_path)
    doc = tomllib.loads((tmp_path / "config.toml").read_text())
    assert "fed" in doc["superlink"]
    try:
        from flwr.cli.flower_config import parse_superlink_connection
    except ImportError:
        return
    assert "local" in doc["superlink"]  # flwr seeds these only when the file is missing
    conn = parse_superlink_connection(doc["superlink"]["fed"], "fed")
    assert conn.address == "superlink.example.org:8000" and not conn.insecure


def test_write_connection_root_keys_stay_at_root(tmp_path):
    (tmp_path / "config.toml").write_text('top = 1\n\n[other]\ny = 2\n')
    deploy.write_connection("fed", "10.0.0.1:8000", insecure=True, home=tmp_path)
    doc = tomllib.loads((tmp_path / "config.toml").read_text())
    assert doc["top"] == 1 and doc["superlink"]["default"] == "fed"


@pytest.mark.parametrize("address", ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "fd00::1:8000",
                                     "https://10.0.0.1:8000", "0.0.0.0:8000", "a b:8000", ":8000"])
def test_write_connection_bad_address(tmp_path, address):
    with pytest.raises(UserError, match="address"):
        deploy.write_connection("fed", address, insecure=True, home=tmp_path)
    assert not (tmp_path / "config.toml").exists()


def test_write_connection_needs_exactly_one_tls_option(tmp_path, certs):
    ca = certs / deploy.CA_CERT
    for kw in ({}, {"root_certificates": ca, "insecure": True}):
        with pytest.raises(UserError, match="exactly one of --root-certificates"):
            deploy.write_connection("fed", "10.0.0.1:8000", home=tmp_path, **kw)
    with pytest.raises(UserError, match="does not exist"):
        deploy.write_connection("fed", "10.0.0.1:8000", root_certificates=tmp_path / "no.crt",
                                home=tmp_path)
    with pytest.raises(UserError, match="not valid TOML"):
        (tmp_path / "config.toml").write_text("[broken\n")
        deploy.write_connection("fed", "10.0.0.1:8000", insecure=True, home=tmp_path)


# ---- Flower command lines ------------------------------------------------------------------------
def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_superlink_command(certs, tmp_path):
    cmd = deploy.superlink_command(certs, tmp_path / "state.db")
    assert cmd[0] == "flower-superlink"
    assert _flag(cmd, "--ssl-ca-certfile") == str(certs / deploy.CA_CERT)
    assert _flag(cmd, "--ssl-certfile") == str(certs / deploy.SERVER_CERT)
    assert _flag(cmd, "--ssl-keyfile") == str(certs / deploy.SERVER_KEY)
    assert _flag(cmd, "--database") == str(tmp_path / "state.db")
    assert _flag(cmd, "--port") == "8000" and _flag(cmd, "--host") == "0.0.0.0"
    assert "--enable-supernode-auth" in cmd and "--insecure" not in cmd

    plain = deploy.superlink_command(None, tmp_path / "s.db", auth=False, insecure=True)
    assert "--insecure" in plain and "--enable-supernode-auth" not in plain
    assert not any(a.startswith("--ssl") for a in plain)

    sl = pytest.importorskip("flwr.superlink.cli.flower_superlink")
    args = sl._parse_args_run_superlink().parse_args(cmd[1:])
    assert args.enable_supernode_auth and not args.runtime_dependency_install


def test_superlink_command_refusals(certs, tmp_path):
    db = tmp_path / "s.db"
    with pytest.raises(UserError, match="needs TLS"):
        deploy.superlink_command(None, db, insecure=True)
    with pytest.raises(UserError, match="--certs DIR"):
        deploy.superlink_command(None, db)
    with pytest.raises(UserError, match="lacks"):
        deploy.superlink_command(tmp_path, db)
    with pytest.raises(UserError, match="does not exist"):
        deploy.superlink_command(certs, tmp_path / "no" / "s.db")
    with pytest.raises(UserError, match="not valid for 10.9.9.9"):
        deploy.superlink_command(certs, db, host="10.9.9.9")
    with pytest.raises(UserError, match="--port"):
        deploy.superlink_command(certs, db, port=0)


def test_superlink_command_refuses_mixed_cert_sets(certs, tmp_path):
    for name in (deploy.CA_CERT, deploy.SERVER_CERT):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    deploy.make_certs(tmp_path / "other", ["10.0.0.1"])
    (tmp_path / deploy.SERVER_KEY).write_bytes((tmp_path / "other" / deploy.SERVER_KEY).read_bytes())
    with pytest.raises(UserError, match="not one set"):
        deploy.superlink_command(tmp_path, tmp_path / "s.db")


def test_supernode_command(certs, node_key, tmp_path):
    ca = certs / deploy.CA_CERT
    cmd = deploy.supernode_command("192.168.1.10:8000", 2, 5, root_certificates=ca,
                                   key=node_key[0], port=9095, data_root=tmp_path / "my data",
                                   state_dir=tmp_path / "state")
    assert cmd[0] == "flower-supernode"
    assert _flag(cmd, "--superlink") == "192.168.1.10:8000"
    assert _flag(cmd, "--root-certificates") == str(ca)
    assert _flag(cmd, "--auth-supernode-private-key") == str(node_key[0])
    assert _flag(cmd, "--port") == "9095"
    nc = _flag(cmd, "--node-config")
    assert nc == (f'partition-id=2 num-partitions=5 data-root="{tmp_path / "my data"}" '
                  f'state-dir="{tmp_path / "state"}"')
    assert "--insecure" not in cmd

    config = pytest.importorskip("flwr.common.config")  # Flower's own --node-config parser
    assert config.parse_config_args([nc]) == {
        "partition-id": 2, "num-partitions": 5, "data-root": str(tmp_path / "my data"),
        "state-dir": str(tmp_path / "state")}
    sn = pytest.importorskip("flwr.supernode.cli.flower_supernode")
    args = sn._parse_args_run_supernode().parse_args(cmd[1:])
    assert args.node_config == nc and args.port == 9095


def test_supernode_command_refusals(certs, node_key, tmp_path):
    ca = certs / deploy.CA_CERT
    ok = dict(superlink="10.0.0.1:8000", partition_id=0, num_partitions=2)
    cases = [
        (dict(ok, partition_id=2, root_certificates=ca), "--partition-id must be in 0..1"),
        (dict(ok, partition_id=-1, root_certificates=ca), "--partition-id"),
        (dict(ok, num_partitions=0, root_certificates=ca), "--num-partitions must be >= 1"),
        (dict(ok, superlink="10.0.0.1"), "HOST:PORT"),
        (dict(ok), "exactly one of --root-certificates"),
        (dict(ok, root_certificates=ca, insecure=True), "exactly one of --root-certificates"),
        (dict(ok, insecure=True, key=node_key[0]), "needs TLS"),
        (dict(ok, root_certificates=tmp_path / "no.crt"), "does not exist"),
        (dict(ok, root_certificates=ca, key=tmp_path / "nokey"), "does not exist"),
        (dict(ok, root_certificates=ca, key=node_key[1]), "pass the private key"),
        (dict(ok, insecure=True, state_dir=ca), "is a file"),
        (dict(ok, insecure=True, data_root=tmp_path / 'a"b'), "double quote"),
    ]
    for kw, msg in cases:
        with pytest.raises(UserError, match=msg):
            deploy.supernode_command(**kw)


# ---- the CLI ---------------------------------------------------------------------------------------
def test_cli_certs_and_keys(tmp_path, capsys):
    assert main(["deploy", "certs", "--out", str(tmp_path / "c"), "--host", "10.0.0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in (deploy.CA_CERT, deploy.CA_KEY, deploy.SERVER_CERT, deploy.SERVER_KEY):
        assert str(tmp_path / "c" / name) in out
    assert any("ca.key" in line and "offline" in line and "SuperNode" in line for line in out)

    assert main(["deploy", "keys", "n0", "n1", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    for n in ("n0", "n1"):
        assert f"flwr supernode register {tmp_path / 'k' / n}.pub <connection>" in out
        assert (tmp_path / "k" / n).is_file()


def test_cli_keys_all_or_nothing(tmp_path, capsys):
    assert main(["deploy", "keys", "n1", "--out", str(tmp_path)]) == 0
    assert main(["deploy", "keys", "n0", "n1", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "n0").exists()
    assert main(["deploy", "keys", "n2", "n2", "--out", str(tmp_path)]) == 2


def test_cli_connection(tmp_path, capsys, certs):
    assert main(["deploy", "connection", "fed", "--address", "10.0.0.5:8000",
                 "--root-certificates", str(certs / deploy.CA_CERT),
                 "--flwr-home", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "config.toml")


def test_cli_print_commands(certs, node_key, tmp_path, capsys):
    assert main(["deploy", "superlink", "--certs", str(certs), "--database",
                 str(tmp_path / "s.db"), "--print"]) == 0
    line = capsys.readouterr().out.strip()
    assert shlex.split(line) == deploy.superlink_command(certs, tmp_path / "s.db")

    assert main(["deploy", "supernode", "--superlink", "10.0.0.5:8000", "--partition-id", "1",
                 "--num-partitions", "3", "--root-certificates", str(certs / deploy.CA_CERT),
                 "--key", str(node_key[0]), "--state-dir", str(tmp_path / "st"), "--print"]) == 0
    argv = shlex.split(capsys.readouterr().out.strip())
    assert argv[0] == "flower-supernode"
    assert _flag(argv, "--node-config") == \
        f'partition-id=1 num-partitions=3 state-dir="{tmp_path / "st"}"'


def test_cli_execs_flower(certs, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(commands.shutil, "which", lambda exe: f"/bin/{exe}")
    monkeypatch.setattr(os, "execvp", lambda file, argv: calls.append((file, argv)))
    monkeypatch.delenv(deploy.NO_RUNTIME_INSTALL_ENV, raising=False)
    assert main(["deploy", "superlink", "--certs", str(certs), "--database",
                 str(tmp_path / "s.db")]) == 0
    assert calls == [("flower-superlink", deploy.superlink_command(certs, tmp_path / "s.db"))]
    assert os.environ[deploy.NO_RUNTIME_INSTALL_ENV] == "1"


@pytest.mark.parametrize("argv", [
    ["deploy", "certs", "--out", "{tmp}", "--host", "not a host"],
    ["deploy", "supernode", "--superlink", "10.0.0.5:8000", "--partition-id", "3",
     "--num-partitions", "3", "--insecure", "--print"],
    ["deploy", "superlink", "--database", "{tmp}/s.db", "--insecure", "--print"],
    ["deploy", "connection", "fed", "--address", "10.0.0.5:8000", "--flwr-home", "{tmp}"],
    ["deploy", "supernode", "--superlink", "10.0.0.5:8000", "--num-partitions", "3"],
    ["deploy"],
])
def test_cli_bad_input_is_one_line(argv, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedticket: error: ") and err.count("\n") == 1, err


def test_deploy_local_rejects_bad_input_before_starting_anything(tmp_path, capsys):
    from fedticket.cli import main

    assert main(["deploy", "local", "--nodes", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--nodes: must be >= 1" in capsys.readouterr().err
    assert main(["deploy", "local", "--set", "density=0", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "density must be in (0, 1]" in err[0]
    assert not (tmp_path / "y" / "federation").exists()


# ---- the one poll loop and the one flwr JSON reader ----------------------------------------------
def test_poll_until_returns_the_first_truthy_value_and_times_out_naming_what():
    from fedticket.deploy.poll import poll_until

    calls = iter([None, 0, "", "ready", "later"])
    assert poll_until(lambda: next(calls), timeout=5, interval=0.0) == "ready"
    with pytest.raises(TimeoutError, match="nodes online"):
        poll_until(lambda: False, timeout=0.05, interval=0.01, what="nodes online")
    with pytest.raises(RuntimeError, match="died"):  # a check that raises aborts at once
        poll_until(lambda: (_ for _ in ()).throw(RuntimeError("died")), timeout=5)


def test_flwr_json_skips_banners_and_refuses_non_objects():
    assert deploy.flwr_json('Loading project...\n{"success": true, "run-id": 7}\ntrailer') == \
        {"success": True, "run-id": 7}
    for bad in ("no json here", "[1, 2]", "{broken"):
        with pytest.raises(ValueError):
            deploy.flwr_json(bad)


# ---- `fedticket fl run`'s app for the local SuperLink --------------------------------------------
def test_generated_app_config_is_the_validated_config():
    from flwr.common.config import flatten_dict

    from fedticket.deploy.simulation import app_pyproject, federation_config
    from fedticket.fl.config import config_from_run_config, load_fl_config

    cfg = load_fl_config(None, ["method=fedpm", "train.max_steps=3", "data.root=/d/a \"b\"",
                                "sim.cpus_per_client=0.5", "sim.num_cpus=4"])
    toml = tomllib.loads(app_pyproject(cfg))
    assert toml["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "fedticket.fl.server_app:app", "clientapp": "fedticket.fl.client_app:app"}
    assert config_from_run_config(flatten_dict(toml["tool"]["flwr"]["app"]["config"])) == cfg
    # Flower takes whole CPUs per client: half a CPU each out of 4 = 8 actors of 1 out of 8
    fed = dict(kv.split("=", 1) for kv in federation_config(cfg).split())
    assert fed["num-supernodes"] == str(cfg.num_clients)
    assert (fed["client-resources-num-cpus"], fed["init-args-num-cpus"]) == ("1", "8")
