"""HTTP client that POSTs one signed payload to UFSE and classifies the answer."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import requests
import urllib3
from requests.adapters import HTTPAdapter

from app.forwarding.signing import decode_secret, webhook_headers
from app.forwarding.ssrf import Guard, GuardedAdapter, RefusedAddress
from app.forwarding.url_redaction import redact, redacted_url
from app.retry.backoff import retry_after_seconds

USER_AGENT = "observer-forwarder/1"
ERROR_BODY_CAP = 2048  # bytes of a failed answer kept for logs
_DRAIN_LIMIT = 64 * 1024  # read this much at most so small answers free their pooled connection
_RETRY_STATUSES = frozenset({408, 429})
# The longest wait a receiver's Retry-After may impose, seconds. It only lengthens the schedule's
# own step (app/forwarding/deliver.py), so an hour bounds what one answer adds to the ~27.6 h
# FORWARD_RETRY_SCHEDULE (at most ~2.5 h in all, over its three short steps), and no header, a
# typo (ms sent as s) or an HTTP-date years ahead, can park a delivery past its snapshot.
RETRY_AFTER_CAP = 3600.0
# Retrying cannot fix a malformed UFSE_URL; these go to the dead-letter table at once.
_PERMANENT_ERRORS = (
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidHeader,
)


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery attempt did: outcome is "delivered", "retry" or "permanent".

    ``error`` never contains UFSE_URL's credentials (app/forwarding/url_redaction.py);
    ``retry_after`` is the receiver's Retry-After, at most RETRY_AFTER_CAP.
    """

    outcome: str
    status: int | None
    error: str | None
    retry_after: float | None
    elapsed_s: float


class UfseClient:
    """Signs and POSTs UFSE payloads over a pooled session; never raises for HTTP trouble."""

    def __init__(
        self,
        url: str,
        secret: str | Sequence[str],
        *,
        timeout: float,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        guard: Guard | None = None,
    ) -> None:
        self.url = url  # only ever handed to requests; shown as ``display_url``
        self.display_url = redacted_url(url)
        self.timeout = timeout
        secrets = secret.split() if isinstance(secret, str) else list(secret)
        if not secrets:
            raise ValueError("a destination needs at least one whsec_ secret")
        # Every attempt is signed with each secret (rotation); decoded now, to fail at start-up.
        self._keys = [decode_secret(s) for s in secrets]
        self._clock = clock
        # ``guard``: a project's destination, checked against the address each connection reaches
        # (app/forwarding/ssrf.py); UFSE_URL is the operator's own and is trusted.
        self._session = session or _pooled_session(guard)

    def deliver(self, body: bytes, *, msg_id: str, request_id: str) -> DeliveryResult:
        """POST body once, signed afresh, and classify the answer."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Request-ID": request_id,
            **webhook_headers(self._keys, msg_id, body, now=self._clock()),
        }
        started = time.monotonic()
        try:
            # No redirects: a 3xx means UFSE_URL is wrong, and following it would replay the POST.
            resp = self._session.post(
                self.url, data=body, headers=headers, timeout=self.timeout,
                stream=True, allow_redirects=False,
            )
        except RefusedAddress as exc:
            return DeliveryResult("permanent", None, self._describe(exc), None, _since(started))
        except _PERMANENT_ERRORS as exc:
            return DeliveryResult("permanent", None, self._describe(exc), None, _since(started))
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            return DeliveryResult("retry", None, self._describe(exc), None, _since(started))
        text = _read_capped(resp)
        status = resp.status_code
        if 200 <= status < 300:
            return DeliveryResult("delivered", status, None, None, _since(started))
        error = redact(f"HTTP {status}: {text}" if text else f"HTTP {status}", self.url)
        if status in _RETRY_STATUSES or status >= 500:
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"), now=self._clock())
            if retry_after is not None and retry_after > RETRY_AFTER_CAP:
                error = f"{error} (Retry-After {resp.headers.get('Retry-After')!r} capped at {RETRY_AFTER_CAP:.0f} s)"
                retry_after = RETRY_AFTER_CAP
            return DeliveryResult("retry", status, error, retry_after, _since(started))
        return DeliveryResult("permanent", status, error, None, _since(started))

    def __repr__(self) -> str:
        return f"UfseClient({self.display_url!r})"

    def _describe(self, exc: BaseException) -> str:
        """A short description of a transport error; requests quotes the URL's path and query."""
        return redact(f"{type(exc).__name__}: {exc}", self.url)[:ERROR_BODY_CAP]

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()


def _pooled_session(guard: Guard | None = None) -> requests.Session:
    """Return a Session whose adapter keeps connections to UFSE alive between deliveries."""
    session = requests.Session()
    # max_retries=0: Celery owns retries (with backoff and a dead letter); urllib3 must not add its own.
    adapter: HTTPAdapter
    if guard is None:
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
    else:
        # No proxy from the environment either: the guard vets the address this process connects to.
        session.trust_env = False
        adapter = GuardedAdapter(guard, pool_connections=4, pool_maxsize=16, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _read_capped(resp: requests.Response) -> str:
    """Return at most ERROR_BODY_CAP bytes of the answer as text, then release the connection."""
    kept = bytearray()
    seen = 0
    try:
        for chunk in resp.iter_content(8192):
            if len(kept) < ERROR_BODY_CAP:
                kept += chunk[: ERROR_BODY_CAP - len(kept)]
            seen += len(chunk)
            if seen > _DRAIN_LIMIT:
                break  # a huge answer is not worth keeping the connection for
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        pass  # the status line already decided the outcome; the body is only for logs
    finally:
        resp.close()
    return kept.decode("utf-8", "replace")


def _since(started: float) -> float:
    """Return seconds elapsed since a time.monotonic() reading."""
    return time.monotonic() - started
