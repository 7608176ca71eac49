"""Load tests and benchmarks refuse any target that is not this machine."""

from __future__ import annotations

import pytest

from loadtests.errors import NotLoopbackError
from loadtests.loopback import require_loopback


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://example.com",
        "https://example.com:443/v1",
        "http://192.168.1.5:8000",
        "http://0.0.0.0:8000",
        "http://127.0.0.1.example.com:8000",
        "ftp://127.0.0.1/",
        "127.0.0.1:8000",
        "http://:8000",
    ],
)
def test_refuses_non_loopback(url: str) -> None:
    with pytest.raises(NotLoopbackError):
        require_loopback(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://localhost:8000", "http://localhost:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://127.0.0.2:9000", "http://127.0.0.2:9000"),
    ],
)
def test_accepts_loopback(url: str, expected: str) -> None:
    assert require_loopback(url) == expected


@pytest.mark.parametrize("host", ["localhost.localdomain", "ip6-localhost", "localhost.example.com"])
def test_loopback_looking_names_are_refused_not_resolved(host: str) -> None:
    # /etc/hosts usually maps these to 127.0.0.1, but the clients would ask the resolver, which may not.
    url = f"http://{host}:8000/v1"
    with pytest.raises(NotLoopbackError) as refused:
        require_loopback(url)
    message = str(refused.value)
    assert url in message and "127.0.0.0/8" in message and "localhost" in message


def test_loadtest_runner_refuses_remote_host(capsys: pytest.CaptureFixture[str]) -> None:
    from loadtests.run import main

    assert main(["--host", "http://10.0.0.1:8000", "--run-time-s", "1"]) == 2
    assert "refusing to send load" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:99999", "invalid port"),
        ("http://127.0.0.1:abc", "invalid port"),
        ("http://127.0.0.1:8000?x=1", "no ?query or #fragment"),
        ("http://127.0.0.1:8000/#top", "no ?query or #fragment"),
        ("http://127.0.0.1:8000?", "no ?query or #fragment"),
        ("http://127.0.0.1:8000/#", "no ?query or #fragment"),
    ],
)
def test_a_malformed_url_is_refused_at_once(capsys: pytest.CaptureFixture[str], url: str, said: str) -> None:
    """A port no connection can use was polled for --ready-timeout-s (15 s) and then reported as a server
    that is not up ("start the server first"); a ?query sent /readyz and the load to `/?x=1/readyz`."""
    from loadtests.run import main

    assert main(["--host", url, "--run-time-s", "1", "--ready-timeout-s", "30"]) == 2
    err = capsys.readouterr().err
    assert said in err and "not ready" not in err, err


def test_loadtest_against_a_server_that_is_not_up_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """It ran and failed (exit 1, as `labelwise bench --url` and docs/client.md's exit codes say); it
    exited 2, the code for an option given wrong."""
    import socket

    from loadtests.run import main

    with socket.socket() as sock:  # a port on this machine that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert main(["--host", f"http://127.0.0.1:{port}", "--ready-timeout-s", "1"]) == 1
    assert "was not ready after 1s" in capsys.readouterr().err
