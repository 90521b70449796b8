"""Bad input, one class per test: one line on stderr naming the problem, exit 2, nothing written.

Each class is parametrised over its instances. The work itself (Flower's engine, graph data,
pruning) is replaced by a tripwire, so a check that lets bad input through fails here at once
instead of starting Ray or training.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from fedticket.cli import main

REPO = Path(__file__).resolve().parents[1]
FL_CFG = str(REPO / "configs" / "fl" / "quickstart.yaml")
GRAPH_CFG = str(REPO / "configs" / "graph" / "quickstart.yaml")
PRUNE = ["prune", "--model", "lenet300", "--method", "magnitude", "--density", "0.1",
         "--input-shape", "1,28,28"]


class WorkStarted(AssertionError):
    pass


@pytest.fixture(autouse=True)
def tripwires(monkeypatch):
    def trip(*_a, **_k):
        raise WorkStarted("bad input reached the work")

    # fedticket.fl.model binds the real prune now, before the patch, so a later test that
    # imports it first does not keep the tripwire
    import fedticket.core
    import fedticket.deploy.simulation
    import fedticket.fl.model  # noqa: F401
    import graph.run

    monkeypatch.setattr(fedticket.deploy.simulation, "run_fl_superlink", trip)
    monkeypatch.setattr(graph.run, "load_planetoid", trip)
    monkeypatch.setattr(fedticket.core, "prune", trip)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def refused(capsys, tmp_path: Path, argv: list[str], match: str) -> None:
    before = snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("fedticket: error: "), err
    assert re.search(match, lines[0]), lines[0]
    assert snapshot(tmp_path) == before, "something was written"


def read_only_dir(tmp_path: Path) -> Path:
    """A folder no one may write into; root ignores permission bits, so use sysfs there."""
    if os.geteuid() == 0:
        return Path("/sys/fedticket-test-out")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return d / "out"


# ---- class: a bad config file (-c) -------------------------------------------------------------
BAD_CONFIGS = {
    "binary": (b"\x00\xff\xfe\x89PNG\r\n\x1a\n" * 8, r"not a text file"),
    "not-yaml": (b"rounds: [1, 2\nseed: 0\n", r"not valid YAML at line \d+"),
    "not-a-mapping": (b"- 1\n- 2\n", r"must hold a mapping"),
    "python-tag": (b"rounds: !!python/object/apply:os.system ['true']\n", r"not valid YAML"),
    "unknown-key": (b"roundz: 3\n", r"unknown config key 'roundz'"),
}


@pytest.mark.parametrize("side", ["fl", "graph"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_file(capsys, tmp_path, side, case):
    data, match = BAD_CONFIGS[case]
    if side == "graph" and case == "unknown-key":
        match = r"unknown config key 'roundz'"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(data)
    refused(capsys, tmp_path, [side, "run", "-c", str(cfg), "--out", str(tmp_path / "out")],
            match)


@pytest.mark.parametrize("side", ["fl", "graph"])
def test_config_path_that_is_no_file(capsys, tmp_path, side):
    refused(capsys, tmp_path, [side, "run", "-c", str(tmp_path), "--out", str(tmp_path / "o")],
            r"is a folder")
    refused(capsys, tmp_path, [side, "run", "-c", str(tmp_path / "nope.yaml")], r"not found")


# ---- class: a bad --set override ---------------------------------------------------------------
@pytest.mark.parametrize("side,override,match", [
    ("fl", "rounds", r"--set expects key=value"),
    ("fl", "=3", r"empty key"),
    ("fl", "rounds=many", r"'rounds' must be an integer"),
    ("fl", "rounds=0", r"rounds must be >= 1"),
    ("fl", "density=1.5", r"density must be in \(0, 1\]"),
    ("fl", "data.name=imagenet", r"'data.name' must be one of"),
    ("fl", "train.lr.x=1", r"must be a number|is a section|set both"),
    ("graph", "train.epochs=0", r"train.epochs must be >= 1"),
    ("graph", "methods=[teddy, teddy]", r"lists a method twice"),
    ("graph", "bogus=1", r"unknown config key 'bogus'"),
    # one name per concept on both sides: an old name says the new one
    ("graph", "data_root=/d", r"'data_root' was replaced: renamed data.root"),
    ("graph", "num_threads=1", r"'num_threads' was replaced: renamed torch_threads"),
    ("graph", "out_root=runs", r"'out_root' was replaced: replaced by output_dir"),
    ("graph", "torch_threads=0", r"torch_threads must be >= 1 or null, got 0"),
    ("graph", "teddy.temperature=.nan", r"'teddy.temperature' must be a number, got nan"),
    ("fl", "server.train_timeout=.nan", r"'server.train_timeout' must be a number, got nan"),
])
def test_bad_override(capsys, tmp_path, data_root, side, override, match):
    cfg = FL_CFG if side == "fl" else GRAPH_CFG
    refused(capsys, tmp_path, [side, "run", "-c", cfg, "--set", override,
                               "--out", str(tmp_path / "out"), "--data-root", str(data_root)],
            match)


# ---- class: a bad output path ------------------------------------------------------------------
def _out_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    fl_results = tmp_path / "fl-results"  # server.checkpoint=false left results, no checkpoint
    fl_results.mkdir()
    (fl_results / "rounds.csv").write_text("round,accuracy\n1,0.5\n")
    (fl_results / "summary.json").write_text("{}\n")
    graph_results = tmp_path / "graph-results"  # another config's results
    graph_results.mkdir()
    (graph_results / "levels.csv").write_text("level\n1\n")
    (graph_results / "config.yaml").write_text("name: other\n")
    return {"existing-file": (a_file, r"existing file, not a folder"),
            "under-a-file": (a_file / "sub", r"is a file, so no folder"),
            "read-only": (read_only_dir(tmp_path), r"cannot write there"),
            # each side names what it found (the graph side also why it cannot resume)
            "fl-results": (fl_results, r"holds results"),
            "graph-results": (graph_results, r"holds results")}


@pytest.mark.parametrize("side", ["fl", "graph"])
@pytest.mark.parametrize("case", ["existing-file", "under-a-file", "read-only", "fl-results",
                                  "graph-results"])
def test_bad_output_dir(capsys, tmp_path, data_root, side, case):
    out, match = _out_cases(tmp_path)[case]
    cfg = FL_CFG if side == "fl" else GRAPH_CFG
    refused(capsys, tmp_path, [side, "run", "-c", cfg, "--out", str(out),
                               "--data-root", str(data_root)], match)


@pytest.mark.parametrize("case,match", [
    ("existing", r"already exists; .*--force"),
    ("folder", r"is a folder; give a file name"),
    ("no-parent", r"does not exist; create it first"),
    ("read-only", r"cannot write there"),
])
def test_bad_output_file(capsys, tmp_path, case, match):
    target = {"existing": tmp_path / "m.safetensors", "folder": tmp_path,
              "no-parent": tmp_path / "missing" / "m.safetensors",
              "read-only": read_only_dir(tmp_path).parent / "m.safetensors"}[case]
    if case == "existing":
        target.write_bytes(b"an earlier mask")
    refused(capsys, tmp_path, [*PRUNE, "--out", str(target)], match)


def test_bad_deploy_output_dir(capsys, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for argv, match in [
        (["deploy", "certs", "--out", str(a_file), "--host", "10.0.0.1"], r"existing file"),
        (["deploy", "keys", "n0", "--out", str(a_file / "k")], r"is a file, so no folder"),
        (["deploy", "local", "--out", str(a_file)], r"existing file"),
    ]:
        refused(capsys, tmp_path, argv, match)


# ---- class: a bad numeric flag -----------------------------------------------------------------
@pytest.mark.parametrize("argv,match", [
    ([*PRUNE, "--num-classes", "0"], r"--num-classes: must be >= 1, got 0"),
    ([*PRUNE, "--num-classes", "-1"], r"--num-classes: must be >= 1, got -1"),
    ([*PRUNE, "--num-classes", "ten"], r"--num-classes: expected an integer"),
    ([*PRUNE, "--iterations", "0"], r"--iterations: must be >= 1"),
    ([*PRUNE, "--batch-size", "0"], r"--batch-size: must be >= 1"),
    ([*PRUNE, "--num-batches", "0"], r"--num-batches: must be >= 1"),
    ([*PRUNE, "--seed", "-1"], r"--seed: must be >= 0"),
    ([*PRUNE, "--density", "nan"], r"density must be in \(0, 1\]"),
    (["mask", "info", "m.safetensors", "--num-classes", "0"], r"--num-classes: must be >= 1"),
    (["deploy", "certs", "--out", "c", "--host", "h", "--days", "0"], r"--days: must be >= 1"),
    (["deploy", "superlink", "--database", "db", "--port", "0"], r"--port: must be >= 1"),
    (["deploy", "supernode", "--superlink", "10.0.0.1:8000", "--partition-id", "-1",
      "--num-partitions", "2", "--insecure"], r"--partition-id: must be >= 0"),
    (["deploy", "supernode", "--superlink", "10.0.0.1:8000", "--partition-id", "0",
      "--num-partitions", "2", "--insecure", "--port", "70000"], r"--port must be in 1..65535"),
    (["deploy", "local", "--rounds", "0"], r"--rounds: must be >= 1"),
])
def test_bad_numeric_flag(capsys, tmp_path, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)  # relative paths in argv land here, and must not be created
    refused(capsys, tmp_path, argv, match)


# ---- what the output check lets through -------------------------------------------------------
def test_output_check_lets_through_overwrite_and_a_same_config_rerun(capsys, tmp_path, data_root):
    from fedticket.config import load_config, to_dict
    from fedticket.results import RunDir
    from graph.config import GraphConfig

    fl_out = _out_cases(tmp_path)["fl-results"][0]
    with pytest.raises(WorkStarted):  # --overwrite: the earlier results go, the run starts
        main(["fl", "run", "-c", FL_CFG, "--out", str(fl_out), "--overwrite",
              "--data-root", str(data_root)])
    assert not (fl_out / "rounds.csv").exists() and not (fl_out / "summary.json").exists()

    same = tmp_path / "graph-same"
    RunDir(same).save_config(to_dict(load_config(GraphConfig, GRAPH_CFG)))
    (same / "summary.json").write_text("{}\n")
    with pytest.raises(WorkStarted):  # same config: the graph side may continue in place
        main(["graph", "run", "-c", GRAPH_CFG, "--out", str(same), "--data-root", str(data_root)])
    assert (same / "summary.json").exists()
