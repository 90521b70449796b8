"""Nothing lost, nothing silently wrong: one test per class of case, in-process (in-memory Grid).

* damaged files the project wrote (checkpoint, mask file, client state) are refused, one line
  naming the file;
* a resume that asks for no new round changes nothing; the byte accounting is right after a
  resume;
* a fresh run never replaces another run's results without server.overwrite=true.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedticket.core.mask import Mask
from fedticket.errors import UserError
from fedticket.fl import checkpoint, client_app
from fedticket.fl.server_app import run_in_process


def _flip_tensor_bytes(path: Path, count: int = 64) -> None:
    """Invert ``count`` bytes in the tensor data of a safetensors file (header left intact)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    assert len(data) - start >= count
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()
            and p.name != "server.log"}


def _run(tiny, out, *overrides):
    cfg = tiny(f"output_dir={out}", "eval.personal_every=0", *overrides)
    return cfg, run_in_process(cfg, out)


def test_damaged_files_are_refused_naming_the_file(tiny, tmp_path):
    out = tmp_path / "run"
    _run(tiny, out, "rounds=1")
    ckpt = out / checkpoint.FILENAME
    _flip_tensor_bytes(ckpt)
    with pytest.raises(UserError) as e:
        checkpoint.load(ckpt)
    msg = str(e.value)
    assert str(ckpt) in msg and "checksum" in msg and "\n" not in msg
    # and a resume from it stops before any round, results untouched
    before = _files(out)
    cfg = tiny(f"output_dir={out}", "eval.personal_every=0", "rounds=2", "server.resume=true")
    with pytest.raises(UserError, match="checksum"):
        run_in_process(cfg, out)
    assert _files(out) == before

    mask = Mask({"a.weight": torch.rand(40, 30) > 0.5})
    path = mask.save(tmp_path / "m.safetensors")
    assert torch.equal(Mask.load(path)["a.weight"], mask["a.weight"])
    _flip_tensor_bytes(path, 16)
    with pytest.raises(ValueError, match="checksum") as e:
        Mask.load(path)
    assert str(path) in str(e.value)

    store = client_app.LocalStateStore(tmp_path / "state", "key", 0)
    store.save(1, torch.arange(64.0), completed_round=0)
    _flip_tensor_bytes(store.dir / "round-1.safetensors")
    with pytest.raises(RuntimeError, match="checksum"):
        store.load_before(2)


def test_resume_without_new_rounds_changes_nothing(tiny, tmp_path, caplog):
    out = tmp_path / "run"
    _, first = _run(tiny, out, "rounds=2")
    before = _files(out)
    for rounds in (1, 2):
        with caplog.at_level("WARNING", logger="fedticket.fl"):
            summary = run_in_process(tiny(f"output_dir={out}", "eval.personal_every=0",
                                          f"rounds={rounds}", "server.resume=true"), out)
        assert "nothing to do: 2 rounds already completed" in caplog.text
        assert json.dumps(summary, sort_keys=True) == json.dumps(first, sort_keys=True)
        assert _files(out) == before


def test_byte_accounting_is_right_after_a_resume(tiny, tmp_path):
    _, whole = _run(tiny, tmp_path / "whole", "rounds=3")
    out = tmp_path / "part"
    _run(tiny, out, "rounds=2")
    _, resumed = _run(tiny, out, "rounds=3", "server.resume=true")
    assert resumed["resumed_at_round"] == 3
    # (total_downlink_bytes differs: after a resume every node gets the setup again)
    for key in ("uplink_bytes_per_client_round", "downlink_bytes_per_client_round",
                "total_uplink_bytes"):
        assert resumed[key] == whole[key], key
    # one setup's size: round 1 sent one to every sampled client
    first = (tmp_path / "whole" / "rounds.csv").read_text().splitlines()
    cols = first[0].split(",")
    row1 = dict(zip(cols, first[2].split(","), strict=True))
    per_client = int(row1["setup_bytes"]) / int(row1["clients"])
    assert whole["setup_downlink_bytes_per_client"] == per_client
    # the setup carries the run config, whose text differs only in server.resume
    assert abs(resumed["setup_downlink_bytes_per_client"] - per_client) <= len("false")


def test_a_fresh_run_never_replaces_results(tiny, tmp_path):
    out = tmp_path / "run"
    _run(tiny, out, "rounds=1", "server.checkpoint=false")
    before = _files(out)
    assert "summary.json" in before and checkpoint.FILENAME not in before
    with pytest.raises(UserError) as e:
        _run(tiny, out, "rounds=1", "server.checkpoint=false", "seed=3")
    msg = str(e.value)
    assert str(out) in msg and "--out" in msg and "--overwrite" in msg and "\n" not in msg
    assert _files(out) == before
    cfg = tiny(f"output_dir={out}", "eval.personal_every=0", "rounds=1",
               "server.checkpoint=false", "seed=3")
    cfg.server.overwrite = True   # the explicit overwrite key (schema: fedticket.fl.config)
    summary = run_in_process(cfg, out)
    assert json.loads((out / "summary.json").read_text())["seed"] == 3
    assert summary["seed"] == 3
