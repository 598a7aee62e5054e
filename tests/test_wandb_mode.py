"""W&B mode decided before any work (issue 12, point 9): online without a key is a one-line error,
an unreachable server means one warning and offline within the timeout, a reachable one stays online.
Every server here is local (a refused port, a socket that never answers, a tiny HTTP server)."""

from __future__ import annotations

import http.server
import logging
import os
import socket
import threading
import time

import pytest

from instructune.config_check import ConfigError
from instructune.wandb_mode import WandbModeError, probe, resolve_wandb_mode, wandb_base_url

KEY = "k" * 40
REFUSED = "http://127.0.0.1:9"  # discard port: nothing listens, the connection is refused at once


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No W&B variable, no proxy, and an empty home: no ~/.netrc or wandb settings of the machine count."""
    for name in list(os.environ):
        if name.startswith("WANDB_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


@pytest.fixture
def server():
    """A local HTTP server that answers every HEAD with 200; yields its URL and the paths it was asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", asked
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def silent_server():
    """A socket that completes the TCP handshake (kernel backlog) but never answers: a hung server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("mode, expected", [("offline", "offline"), ("dryrun", "offline"),
                                            ("disabled", "disabled")])
def test_explicit_offline_or_disabled_is_kept_without_any_probe(monkeypatch, caplog, mode, expected):
    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", REFUSED)
    monkeypatch.setattr("instructune.wandb_mode.probe", lambda *a, **k: pytest.fail("probed"))
    assert resolve_wandb_mode() == expected
    assert os.environ["WANDB_MODE"] == mode and _warnings(caplog) == []


def test_no_key_and_no_mode_runs_offline_without_probing(monkeypatch, caplog):
    monkeypatch.setattr("instructune.wandb_mode.probe", lambda *a, **k: pytest.fail("probed"))
    assert resolve_wandb_mode() == "offline"
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_SILENT"] == "true"
    assert _warnings(caplog) == []


@pytest.mark.parametrize("mode", ["online", "shared"])
def test_online_without_a_key_is_a_one_line_error_before_any_probe(monkeypatch, mode):
    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.setattr("instructune.wandb_mode.probe", lambda *a, **k: pytest.fail("probed"))
    started = time.perf_counter()
    with pytest.raises(WandbModeError) as caught:
        resolve_wandb_mode()
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"WANDB_MODE={mode} but no W&B API key for ")
    assert "set WANDB_API_KEY" in message and "`wandb login`" in message and "WANDB_MODE=offline" in message
    # a ConfigError (a ValueError): entry.main_job prints it as one `error: ...` line, exit status 1
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)
    assert os.environ["WANDB_MODE"] == mode


def test_resolve_wandb_mode_through_env_makes_the_same_decisions(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(WandbModeError, match=r"^WANDB_MODE=online but no W&B API key"):
        resolve_wandb_mode()
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", REFUSED)
    assert resolve_wandb_mode(timeout_s=5) == "offline" and os.environ["WANDB_MODE"] == "offline"


def test_unknown_mode_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "onlin")
    with pytest.raises(WandbModeError, match=r"^WANDB_MODE=onlin is not a W&B mode: use online, offline or "
                                             r"disabled \(or unset it\)$"):
        resolve_wandb_mode()


def test_a_netrc_entry_from_wandb_login_counts_as_a_key(monkeypatch, tmp_path, server):
    url, asked = server
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", url)
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine {url.split('//')[1]}\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode(timeout_s=5) == "online"
    assert asked == ["/"] and os.environ["WANDB_MODE"] == "online"


def test_a_netrc_entry_for_another_host_does_not(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", REFUSED)
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine elsewhere.example\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    with pytest.raises(WandbModeError):
        resolve_wandb_mode()


def test_a_key_and_a_reachable_server_stay_online(monkeypatch, caplog, server):
    url, asked = server
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    assert resolve_wandb_mode(timeout_s=5) == "online"
    assert "WANDB_MODE" not in os.environ  # wandb's own default (online) applies
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode(timeout_s=5) == "online"
    assert os.environ["WANDB_MODE"] == "online" and asked == ["/", "/"] and _warnings(caplog) == []


@pytest.mark.parametrize("explicit", [False, True])
def test_a_refused_connection_falls_back_to_offline_with_one_warning(monkeypatch, caplog, explicit):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", REFUSED)
    if explicit:
        monkeypatch.setenv("WANDB_MODE", "online")
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        assert resolve_wandb_mode(timeout_s=5) == "offline"
    assert time.perf_counter() - started < 5
    assert os.environ["WANDB_MODE"] == "offline"
    (warning,) = _warnings(caplog)
    assert "\n" not in warning
    assert warning.startswith(f"W&B server {REFUSED} unreachable (") and "Connection refused" in warning
    assert warning.endswith("); logging offline instead, sync later with `wandb sync`")
    # settled: a second call (a DDP child, the next job of a sweep) neither probes nor warns again
    caplog.clear()
    monkeypatch.setattr("instructune.wandb_mode.probe", lambda *a, **k: pytest.fail("probed"))
    assert resolve_wandb_mode() == "offline" and _warnings(caplog) == []


def test_a_server_that_never_answers_falls_back_within_the_timeout(monkeypatch, caplog, silent_server):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        assert resolve_wandb_mode(timeout_s=0.5) == "offline"
    elapsed = time.perf_counter() - started
    assert 0.4 < elapsed < 3, elapsed
    (warning,) = _warnings(caplog)
    assert warning.startswith(f"W&B server {silent_server} unreachable (")
    assert os.environ["WANDB_MODE"] == "offline"


def test_the_probe_is_bounded_even_when_the_request_hangs(monkeypatch):
    """Name lookup is not covered by socket timeouts: the probe's own wait is the bound."""
    release = threading.Event()
    monkeypatch.setattr("instructune.wandb_mode._head", lambda url, timeout_s: release.wait(30) and None)
    started = time.perf_counter()
    assert probe("https://w.example", timeout_s=0.3) == "no answer within 0.3 s"
    assert time.perf_counter() - started < 2
    release.set()


def test_a_gateway_error_is_unreachable_other_statuses_are_answers(monkeypatch):
    import urllib.error

    def status(code):
        def head(*args, **kwargs):
            raise urllib.error.HTTPError("http://w", code, "x", {}, None)
        return head

    for code, expected in [(401, None), (404, None), (301, None), (502, "HTTP 502 from a gateway"),
                           (504, "HTTP 504 from a gateway")]:
        monkeypatch.setattr("urllib.request.OpenerDirector.open", status(code))
        assert probe("http://w", timeout_s=2) == expected


def test_base_url_comes_from_the_environment_then_wandb_settings_then_wandbs_default(monkeypatch, tmp_path):
    from wandb.sdk.lib.urls import DEFAULT_BASE_URL

    assert wandb_base_url() == DEFAULT_BASE_URL
    settings = tmp_path / "wandb-config" / "settings"
    settings.parent.mkdir()
    settings.write_text("[default]\nbase_url = https://wandb.mycorp.example/\n")
    assert wandb_base_url() == "https://wandb.mycorp.example"
    monkeypatch.setenv("WANDB_BASE_URL", "http://localhost:8080/")
    assert wandb_base_url() == "http://localhost:8080"
