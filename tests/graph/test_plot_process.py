"""fedticket.results.PlotProcess: the graph CLI's plots drawn by a child process started early."""

from __future__ import annotations

from fedticket.results import PlotProcess, plot_lines

SERIES = {"teddy": ([0.05, 0.1], [81.0, 80.5]), "dense": ([0.0, 0.1], [81.7, 81.7])}


def _png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_child_draws_what_plot_lines_draws(tmp_path):
    p = PlotProcess()
    assert p.proc is not None
    out = p.plot_lines(tmp_path / "a.png", SERIES, "x", "y", "t", yerr={"teddy": [0.1, 0.2]})
    assert not out.exists()  # queued, not drawn yet
    p.close()
    assert p.proc.returncode == 0 and _png(out)
    plot_lines(tmp_path / "b.png", SERIES, "x", "y", "t", yerr={"teddy": [0.1, 0.2]})
    assert _png(tmp_path / "b.png")


def test_a_failed_child_falls_back_to_drawing_here(tmp_path):
    p = PlotProcess()
    p.cancel()  # the child is gone (killed, crashed): its plots are drawn in this process
    out = p.plot_lines(tmp_path / "c.png", SERIES, "x", "y")
    p.close()
    assert p.proc.returncode != 0 and _png(out)


def test_cancel_ends_the_child():
    p = PlotProcess()
    p.cancel()
    assert p.proc.poll() is not None
    p.cancel()  # twice: nothing left to end
