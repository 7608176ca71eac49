"""Whether a server could listen on a port now. Standard library only: the demo, `labelwise serve` and the
bench check a port before minutes of training or a Ray start, without importing the web stack."""

from __future__ import annotations

from typing import Any

from model_repository.errors import UsageError


def check_port_free(host: str, port: int) -> None:
    """UsageError when something listens on host:port already (port 0: any free port, nothing to check).

    A plain bind (SO_REUSEADDR, which passes over connections closing in TIME_WAIT, but not SO_REUSEPORT)
    fails on a port another socket listens on, whatever that socket's own options."""
    import errno
    import socket

    if port == 0:
        return
    if not 0 < port <= 65535:
        raise UsageError(f"port {port}: use a TCP port from 1 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"{host}:{port} is in use: another server listens there (an earlier `labelwise serve` "
                    "or demo still running?); stop it or choose another --port"
                ) from None
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def hold_port(host: str, port: int) -> Any:
    """check_port_free, then keep a socket bound on host:port (never listening) until release_held_ports:
    the check alone left the port free while Ray started (10-15 s), and a second `labelwise serve` started
    then passed it, both servers' replicas binding the port with SO_REUSEPORT and the kernel splitting the
    connections between them. The socket held has SO_REUSEPORT and not SO_REUSEADDR: this run's replicas
    and proxy (same user, SO_REUSEPORT) bind beside it, a plain bind (another serve's check, with
    SO_REUSEADDR) is refused, and a previous run's connections in TIME_WAIT do not stop it. It never
    listens, so no connection reaches it. None for port 0."""
    import socket

    check_port_free(host, port)
    if port == 0:
        return None
    held = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        held.bind((host, port))
    except OSError as exc:  # taken between the check and here
        held.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    _HELD.append(held)
    return held


_HELD: list[Any] = []  # the sockets hold_port holds, until release_held_ports (stop_local_ray) closes them


def release_held_ports() -> None:
    """Close every socket hold_port holds: the server is stopping (serving.local_ray.stop_local_ray)."""
    while _HELD:
        _HELD.pop().close()


__all__ = ["check_port_free", "hold_port", "release_held_ports"]
