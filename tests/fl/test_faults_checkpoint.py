"""Faults, membership and checkpoints, driven in-process through the in-memory Grid.

The Grid routes each message to the real ClientApp; a "silent" node never answers (what a
SIGKILLed SuperNode looks like to the server until its heartbeat expires), a "failing" node
answers with a Flower error. The real-process version is tests/e2e/test_deploy_e2e.py.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from flwr.app import Context, RecordDict

from fedticket.core.mask import Mask
from fedticket.errors import ConfigError, UserError
from fedticket.fl import checkpoint, client_app
from fedticket.fl.config import config_from_run_config
from fedticket.fl.memgrid import InMemoryGrid
from fedticket.fl.model import build_ticket
from fedticket.fl.strategy import make_strategy

NODE0 = 5000


class FakeGrid(InMemoryGrid):
    """The in-memory Grid, also recording the timeout of every phase."""

    def __init__(self, cfg, parts=None):
        super().__init__(client_app.app, {NODE0 + 11 * p: p for p in range(cfg.num_clients)},
                         num_partitions=parts or cfg.num_clients)
        self.timeouts: list[float] = []

    def send_and_receive(self, messages, *, timeout=None):
        self.timeouts.append(timeout)
        return super().send_and_receive(messages, timeout=timeout)


def _strategy(cfg, grid):
    ticket = build_ticket(cfg, None)
    s = make_strategy(cfg, ticket, run_key=checkpoint.fingerprint(cfg))
    s.members.connect(grid)
    return s


def test_dead_node_is_logged_by_id_and_takes_part_again(tiny, caplog):
    cfg = tiny("rounds=3", "clients_per_round=4", "eval.personal_every=0",
               "server.query_timeout=1", "server.train_timeout=2")
    grid = FakeGrid(cfg)
    s = _strategy(cfg, grid)
    victim = s.members.nodes[1]
    ends = []

    def on_end(r, arrays):
        ends.append(r)
        if r == 1:
            grid.silent.add(victim)          # dies during round 2
        if r == 2:
            grid.restart(victim)           # comes back before round 3

    with caplog.at_level(logging.WARNING, logger="fedticket.fl"):
        s.start(grid, s.initial_arrays(), num_rounds=3, on_round_end=on_end)
    assert ends == [1, 2, 3]
    assert [s.history.rounds[r].accepted for r in (1, 2, 3)] == [4, 3, 4]
    assert s.history.rounds[2].missing == [1] and s.history.rounds[2].rejected == 0
    assert f"round 2: client 1 (node {victim}) sent no training reply" in caplog.text
    assert f"client 1 (node {victim}) answers again" in caplog.text
    # the restarted process lost its setup: round 3 sends it again, to that node only
    assert s.history.rounds[3].setup_bytes > 0
    assert s.history.rounds[3].setup_bytes * 4 == s.history.rounds[1].setup_bytes
    assert grid.timeouts.count(cfg.server.train_timeout) == 3


def test_error_reply_is_a_missing_reply_with_its_reason(tiny, caplog):
    cfg = tiny("rounds=1", "clients_per_round=4", "eval.personal_every=0")
    grid = FakeGrid(cfg)
    s = _strategy(cfg, grid)
    grid.failing[s.members.nodes[2]] = "device lost power"
    with caplog.at_level(logging.WARNING, logger="fedticket.fl"):
        s.start(grid, s.initial_arrays(), num_rounds=1)
    assert s.history.rounds[1].accepted == 3 and s.history.rounds[1].missing == [2]
    assert s.history.rounds[1].rejected == 0     # rejected counts bad replies only
    assert "device lost power" in caplog.text


def test_too_few_replies_keep_the_global_model(tiny):
    cfg = tiny("rounds=1", "clients_per_round=4", "eval.personal_every=0",
               "server.min_train_replies=4")
    grid = FakeGrid(cfg)
    s = _strategy(cfg, grid)
    grid.silent.add(s.members.nodes[0])
    first = s.initial_arrays()
    out = s.start(grid, first, num_rounds=1).arrays
    assert bytes(out["payload"].data) == bytes(first["payload"].data)
    assert s.history.rounds[1].accepted == 3


def test_round_waits_bounded_for_min_available_nodes(tiny):
    cfg = tiny("rounds=2", "clients_per_round=2", "eval.personal_every=0",
               "server.min_available_nodes=3", "server.connect_timeout=0.3",
               "server.query_timeout=0.1")
    grid = FakeGrid(cfg)
    s = _strategy(cfg, grid)
    for node in list(grid.online)[:2]:
        grid.online.discard(node)          # two of four nodes leave for good

    with pytest.raises(RuntimeError, match="min_available_nodes=3.*server.resume=true"):
        s.start(grid, s.initial_arrays(), num_rounds=2)


def test_wrong_num_partitions_is_refused_with_the_fix(tiny):
    cfg = tiny("server.connect_timeout=0.2", "server.query_timeout=0.1")
    grid = FakeGrid(cfg, parts=7)
    with pytest.raises(UserError, match="num-partitions=7 but num_clients=4"):
        _strategy(cfg, grid)


def test_sampling_over_all_available_equals_plain_sampling(tiny):
    cfg = tiny()
    s = make_strategy(cfg, build_ticket(cfg, None))
    for r in range(1, 6):
        assert s.sample(r, 3, 11) == s.sample(r, 3, 11, available=range(cfg.num_clients))
    assert set(s.sample(1, 3, 11, available=[0, 2])) == {0, 2}


# ---- checkpoint files -----------------------------------------------------------------------
def _ckpt(cfg, r=2):
    mask = Mask({"a": torch.tensor([[True, False], [False, True]]), "b": torch.ones(3, dtype=torch.bool)})
    from fedticket.config import to_dict

    return checkpoint.Checkpoint(round=r, config=to_dict(cfg), mask=mask, global_stype="fedticket.bits",
                                 global_bytes=b"FT\x01\x00\x05\x00\x00\x00\x1f",
                                 rows=[{"round": 0, "global_accuracy": 0.1}],
                                 stats={1: {"accepted": 3}}, seconds=1.5,
                                 fingerprint=checkpoint.fingerprint(cfg))


def test_checkpoint_roundtrip_is_atomic(tiny, tmp_path):
    cfg = tiny()
    path = checkpoint.save(tmp_path / checkpoint.FILENAME, _ckpt(cfg))
    checkpoint.save(path, _ckpt(cfg, r=3))  # replaces, leaves no temp file behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.FILENAME]
    ck = checkpoint.load(path)
    assert ck.round == 3 and ck.global_bytes == _ckpt(cfg).global_bytes
    assert ck.mask.keys() == {"a", "b"} and torch.equal(ck.mask["a"], _ckpt(cfg).mask["a"])
    assert ck.rows == [{"round": 0, "global_accuracy": 0.1}] and ck.stats == {1: {"accepted": 3}}
    checkpoint.check_compatible(ck, cfg, path)


def test_damaged_or_foreign_checkpoint_is_one_clear_error(tiny, tmp_path):
    bad = tmp_path / "c.safetensors"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(UserError, match="damaged or not a fedticket checkpoint"):
        checkpoint.load(bad)
    Mask({"w": torch.ones(3, dtype=torch.bool)}).save(tmp_path / "m.safetensors")
    with pytest.raises(UserError, match="not a fedticket federated checkpoint"):
        checkpoint.load(tmp_path / "m.safetensors")


def test_fingerprint_ignores_rounds_paths_and_server_keys(tiny, tmp_path):
    a = tiny()
    b = tiny("rounds=9", "server.resume=true", "server.train_timeout=5", "sim.num_cpus=1")
    assert checkpoint.fingerprint(a) == checkpoint.fingerprint(b)
    c = tiny("train.lr=0.01")
    assert checkpoint.fingerprint(a) != checkpoint.fingerprint(c)
    with pytest.raises(UserError, match="train.lr: checkpoint 0.1, now 0.01"):
        checkpoint.check_compatible(_ckpt(a), c, tmp_path / "x")



# ---- checkpointed method state --------------------------------------------------------------
class Stop(RuntimeError):
    pass


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _fresh_state(cfg, mask):
    from fedticket.fl.methods import make_method

    method = make_method(cfg, build_ticket(cfg, mask))
    method.initial_global()
    return method, method.state()


@pytest.mark.parametrize("extra", [
    ("method=signscore", "signscore.uplink_coding=entropy", "signscore.downlink_coding=entropy"),
    ("method=signscore", "robust.kind=reputation"),
    ("method=fedpm", "fedpm.keep_priors=true"),
], ids=["signscore-coded", "signscore-reputation", "fedpm-kept-priors"])
def test_resumed_run_equals_uninterrupted_run_with_method_state(tiny, tmp_path, extra):
    from fedticket.fl.server_app import run_in_process

    def cfg(name, *more):
        # a new in-memory Grid per run: the clients' own state survives only in the state dir
        return tiny(*extra, "rounds=4", "eval.personal_every=0", f"output_dir={tmp_path / name}",
                    f"server.client_state_dir={tmp_path / ('state-' + name)}", *more)

    run_in_process(cfg("a"), tmp_path / "a")

    def stop_after_2(server_round, _arrays):
        if server_round == 2:
            raise Stop("server killed after round 2")

    with pytest.raises(Stop):
        run_in_process(cfg("b"), tmp_path / "b", on_round_end=stop_after_2)
    ck = checkpoint.load(tmp_path / "b" / checkpoint.FILENAME)
    _, fresh = _fresh_state(cfg("b"), ck.mask)
    assert ck.round == 2 and ck.method_state.keys() == fresh.keys() != set()
    # the state moved away from its start: a server restarting it would compute other rounds
    assert any(not torch.equal(ck.method_state[k], fresh[k]) for k in fresh)

    resumed = run_in_process(cfg("b", "server.resume=true"), tmp_path / "b")
    assert resumed["resumed_at_round"] == 3
    a, b = _rows(tmp_path / "a" / "rounds.csv"), _rows(tmp_path / "b" / "rounds.csv")
    assert [r["round"] for r in b] == ["0", "1", "2", "3", "4"]
    for ra, rb in zip(a, b, strict=True):
        for col in ("global_accuracy", "global_loss", "uplink_bytes", "accepted"):
            assert ra[col] == rb[col], (ra["round"], col)
    end_a = checkpoint.load(tmp_path / "a" / checkpoint.FILENAME).method_state
    end_b = checkpoint.load(tmp_path / "b" / checkpoint.FILENAME).method_state
    assert end_a.keys() == end_b.keys()
    for k in end_a:
        assert torch.equal(end_a[k], end_b[k]) or (
            end_a[k].is_floating_point() and torch.equal(end_a[k].isnan(), end_b[k].isnan())
            and torch.equal(end_a[k].nan_to_num(), end_b[k].nan_to_num())), k


def test_method_state_that_does_not_fit_is_refused_naming_the_file_and_the_fix(tiny, tmp_path):
    from fedticket.fl.server_app import run_in_process

    args = ("method=signscore", "eval.personal_every=0")
    out = tmp_path / "run"
    run_in_process(tiny(*args, "rounds=1"), out)
    path = out / checkpoint.FILENAME
    ck = checkpoint.load(path)
    n = ck.method_state["score"].numel()
    ck.method_state["score"] = ck.method_state["score"][:-1]
    checkpoint.save(path, ck)   # a valid file (checksum and all), but not this run's state
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.name != "server.log"}
    with pytest.raises(UserError) as err:
        run_in_process(tiny(*args, "rounds=2", "server.resume=true"), out)
    msg = str(err.value)
    assert str(path) in msg and f"'score' is float32[{n - 1}], expected float32[{n}]" in msg
    assert "move it away to start over" in msg and "\n" not in msg
    # refused before the folder was touched
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.name != "server.log"} == before

    # a missing and an unknown name are named too
    method, fresh = _fresh_state(tiny(*args), ck.mask)
    ck.method_state = {"score": fresh["score"], "momentum": fresh["velocity"]}
    with pytest.raises(UserError, match="'momentum' not kept by signscore.*'velocity' missing"):
        checkpoint.restore_method_state(method, ck, path)


def test_checkpoint_before_method_state_resumes_only_a_method_without_state(tiny, tmp_path):
    path = tmp_path / checkpoint.FILENAME
    for args, keeps in ((("method=hidenseek",), False), (("method=binary-mask",), False),
                        (("method=signscore",), True),
                        (("method=hidenseek", "robust.kind=reputation"), True),
                        (("method=fedpm",), False), (("method=fedpm", "fedpm.keep_priors=true"), True)):
        cfg = tiny(*args)
        old = _ckpt(cfg)
        old.method_state = None          # the layout of every checkpoint before this change
        checkpoint.save(path, old)
        ck = checkpoint.load(path)
        assert ck.method_state is None
        method, fresh = _fresh_state(cfg, None)
        assert bool(fresh) == keeps, args
        if keeps:
            with pytest.raises(UserError, match=f"{path}.*written before checkpoints carried method "
                                                "state.*start the run again in a new results folder"):
                checkpoint.restore_method_state(method, ck, path)
        else:
            checkpoint.restore_method_state(method, ck, path)   # resumes exactly: nothing was lost

# ---- the client's on-disk local state -------------------------------------------------------
def test_local_state_store_resumes_from_before_the_redone_round(tmp_path):
    store = client_app.LocalStateStore(tmp_path, "key", 3)
    for r in (1, 3, 4):
        store.save(r, torch.full((5,), float(r)), completed_round=0)
    assert store.load_before(4)[0] == 3.0      # round 4 redone: start from the round-3 state
    assert store.load_before(5)[0] == 4.0
    assert store.load_before(1) is None
    store.save(6, torch.full((5,), 6.0), completed_round=4)
    # rounds before the newest one at or before the checkpoint can never be needed again
    assert sorted(p.name for p in store.dir.iterdir()) == \
        ["round-4.safetensors", "round-6.safetensors"]


# ---- config ---------------------------------------------------------------------------------
def test_moved_and_nullable_keys():
    with pytest.raises(ConfigError, match="sim.timeout' was replaced: use server.train_timeout"):
        config_from_run_config({"sim.timeout": 10.0})
    cfg = config_from_run_config({"data.root": "", "train.max_steps": "", "output_dir": "",
                                  "server.client_state_dir": ""})
    assert cfg.data.root is None and cfg.train.max_steps is None and cfg.output_dir is None
    assert cfg.server.client_state_dir is None
    with pytest.raises(ConfigError, match="server.train_timeout must be > 0"):
        config_from_run_config({"server.train_timeout": 0.0})


def test_partition_cache_in_state_dir_returns_the_same_tensors(tiny, tmp_path):
    from fedticket.fl.dataset import client_tensors

    cfg = tiny()
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 2, "num-partitions": 4,
                                                    "state-dir": str(tmp_path)},
                  state=RecordDict(), run_config={})
    first = client_app._client_data(cfg, cfg.data.root, 2, ctx)
    files = list((tmp_path / "partitions").glob("*.safetensors"))
    assert len(files) == 1
    again = client_app._client_data(cfg, cfg.data.root, 2, ctx)   # read back from the file
    plain = client_tensors(cfg, cfg.data.root, 2)
    for a, b, c in zip(first, again, plain, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    files[0].write_bytes(b"garbage")                                 # damaged: rebuilt
    for a, c in zip(client_app._client_data(cfg, cfg.data.root, 2, ctx), plain, strict=True):
        assert torch.equal(a, c)


def test_cli_refuses_a_checkpointed_folder_before_starting_the_engine(tiny, tmp_path, capsys):
    from fedticket.cli import main

    cfg = tiny()
    out = tmp_path / "run"
    checkpoint.save(out / checkpoint.FILENAME, _ckpt(cfg))
    quickstart = Path(__file__).resolve().parents[2] / "configs/fl/quickstart.yaml"
    base = ["fl", "run", "-c", str(quickstart), "--out", str(out),
            "--data-root", cfg.data.root, "--quiet"]
    assert main(base) == 2
    assert "holds the checkpoint of an earlier run" in capsys.readouterr().err
    assert main(base + ["--set", "server.resume=true"]) == 2   # quickstart != the checkpoint's
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config differs from the checkpoint" in err[0]
    assert checkpoint.load(out / checkpoint.FILENAME).round == 2
