"""Whether a server could listen on a port now. Standard library only: the demo, `labelwise serve` and the
bench check a port before minutes of training or a Ray start, without importing the web stack."""

from __future__ import annotations

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


__all__ = ["check_port_free"]
