"""Processes this code starts: free ports, and stopping a whole process tree by PID."""

from __future__ import annotations

import signal
import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list:
    import psutil

    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_procs(procs: list, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
    """Signal these ``psutil.Process`` objects; SIGKILL whatever outlives ``wait`` seconds."""
    import psutil

    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=wait)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=wait)


def kill_tree(pid: int, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
    """Signal a process and all its descendants; SIGKILL whatever outlives ``wait`` seconds."""
    kill_procs(tree(pid), sig, wait)


def session(sid: int) -> list:
    """The processes of session ``sid`` (one started with ``start_new_session=True`` has
    ``sid == its pid``), also those reparented to init when their parent died first."""
    import os

    import psutil

    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid and p.pid != os.getpid():
                out.append(p)
        except (OSError, psutil.Error):
            continue
    return out


def kill_session_tree(pid: int, sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    """Stop ``pid``, its descendants and its session together. Flower detaches some children
    (new sessions), so the tree is taken before anything dies: once a parent is gone its
    children are reparented to init and no longer findable from it."""
    seen, procs = set(), []
    for p in [*tree(pid), *session(pid)]:
        if p.pid not in seen:
            seen.add(p.pid)
            procs.append(p)
    for p in list(procs):  # descendants of the session's members (detached ones included)
        for c in tree(p.pid):
            if c.pid not in seen:
                seen.add(c.pid)
                procs.append(c)
    kill_procs(procs, sig, wait)
