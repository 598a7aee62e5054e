"""Which mode W&B runs in, decided before any work (issue 12, point 9).

``resolve_wandb_mode`` settles ``WANDB_MODE`` in the environment, where ``wandb.init`` (called by
Lightning's ``WandbLogger``) reads it:

* ``WANDB_MODE=offline`` / ``disabled`` (or ``dryrun``): kept; nothing is probed.
* no ``WANDB_MODE`` and no key: offline (no login prompt, no network wait).
* ``WANDB_MODE=online`` (or ``shared`` / ``run``) and no key: ``WandbModeError``, one line naming the fixes;
  otherwise wandb would fail with a traceback once the model is loaded.
* a key: the W&B server must answer within ``timeout_s``; if it does not, one warning line and
  ``WANDB_MODE=offline``, and the run goes on (otherwise ``wandb.init`` retries for ~90 s, then fails).

A key is what ``wandb.init`` itself would find: ``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, or the
server's entry in ``~/.netrc`` (``$NETRC``), which ``wandb login`` writes. The key is not checked
against the server, only that the server answers.
"""

from __future__ import annotations

import configparser
import logging
import os
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from instructune.config_check import ConfigError

log = logging.getLogger(__name__)

FALLBACK_BASE_URL = "https://api.wandb.ai"  # when the installed wandb does not say its default
DEFAULT_TIMEOUT_S = 10.0  # the server probe; with start-up, the fallback to offline stays under 15 s

_OFFLINE = {"offline": "offline", "dryrun": "offline", "disabled": "disabled"}
_ONLINE = {"online": "online", "run": "online", "shared": "shared"}
_GATEWAY_ERRORS = (502, 503, 504)  # a proxy answered, the W&B server behind it did not


class WandbModeError(ConfigError):
    """W&B cannot run in the mode asked for; the message is one line naming the fixes."""


def resolve_wandb_mode(timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Settle ``WANDB_MODE`` (see the module docstring) and return the mode in force:
    ``online``, ``shared``, ``offline`` or ``disabled``. Raises ``WandbModeError`` for online without a key
    or an unknown ``WANDB_MODE``. Takes at most ``timeout_s`` (plus reading ``~/.netrc``)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    asked = os.environ.get("WANDB_MODE", "")
    if asked in _OFFLINE:
        return _OFFLINE[asked]
    if asked and asked not in _ONLINE:
        raise WandbModeError(f"WANDB_MODE={asked} is not a W&B mode: "
                             "use online, offline or disabled (or unset it)")
    base_url = wandb_base_url()
    if not _has_credentials(base_url):
        if not asked:
            os.environ["WANDB_MODE"] = "offline"
            return "offline"
        raise WandbModeError(f"WANDB_MODE={asked} but no W&B API key for {base_url}: "
                             "set WANDB_API_KEY (or run `wandb login`), or set WANDB_MODE=offline "
                             "to log locally and `wandb sync` later")
    problem = probe(base_url, timeout_s)
    if problem is None:
        return _ONLINE.get(asked, "online")
    log.warning("W&B server %s unreachable (%s); logging offline instead, sync later with `wandb sync`",
                base_url, problem)
    os.environ["WANDB_MODE"] = "offline"
    return "offline"


def wandb_base_url() -> str:
    """The W&B server wandb will talk to: ``WANDB_BASE_URL``, else ``base_url`` in wandb's settings file
    (written by ``wandb login --host``), else wandb's default."""
    if url := os.environ.get("WANDB_BASE_URL", "").strip():
        return url.rstrip("/")
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb").expanduser()
    settings = configparser.ConfigParser()
    try:
        settings.read(config_dir / "settings")
        if url := settings.get("default", "base_url", fallback="").strip():
            return url.rstrip("/")
    except (configparser.Error, OSError, UnicodeDecodeError):
        pass
    try:
        from wandb.sdk.lib.urls import DEFAULT_BASE_URL
    except ImportError:
        return FALLBACK_BASE_URL
    return DEFAULT_BASE_URL


def _has_credentials(base_url: str) -> bool:
    if os.environ.get("WANDB_API_KEY", "").strip() or os.environ.get("WANDB_IDENTITY_TOKEN_FILE", "").strip():
        return True
    try:  # wandb's own lookup (NETRC, ~/.netrc or ~/_netrc, the Forge host's upstream entry)
        from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth
    except ImportError:
        return _netrc_has(base_url)
    try:
        return bool(read_netrc_auth(host=base_url))
    except Exception:  # an entry wandb rejects as malformed: let wandb.init say what is wrong with it
        return True


def _netrc_has(base_url: str) -> bool:
    import netrc

    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(urlsplit(base_url).netloc)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is an answer: do not follow it elsewhere
        return None


def probe(base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """``None`` when the server at ``base_url`` answers an HTTP ``HEAD`` within ``timeout_s`` seconds
    (any status but a gateway error), else why not. Proxies are used as wandb uses them (``HTTPS_PROXY``
    ...). Name lookup included, the wait is bounded: the request runs in a daemon thread."""
    outcome: list[str | None] = []
    thread = threading.Thread(target=lambda: outcome.append(_head(base_url, timeout_s)), daemon=True,
                              name="wandb-probe")
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


def _head(url: str, timeout_s: float) -> str | None:
    # reachability only, no credentials are sent: certificates are not checked here (wandb checks them)
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(
        context=ssl._create_unverified_context()))
    try:
        with opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout_s):
            return None
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} from a gateway" if e.code in _GATEWAY_ERRORS else None
    except urllib.error.URLError as e:
        return str(e.reason)
    except Exception as e:  # timeouts, resets, a malformed URL
        return str(e) or type(e).__name__
