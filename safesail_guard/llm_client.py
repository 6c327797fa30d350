"""One blocking client for any OpenAI-compatible ``/chat/completions`` endpoint.

Every caller that asks an LLM for text goes through :class:`LLMClient`: the guard's pivot
(:mod:`safesail_guard.runtime.pivot`) at run time, and offline the de-concept twin writer
(:mod:`safesail_training.pairs_generate`), the explainer, the simulator and the SpScore. It lives in the online
package so that serving never imports the pipeline; its settings, results and errors are in
:mod:`safesail_guard.llm_config`. The endpoint can be vLLM, a llama.cpp server, Ollama or a hosted API; only the
OpenAI wire format is assumed.

What the client does for its callers:

* settings from one pydantic-settings class, :class:`~safesail_guard.llm_config.LLMClientConfig` (env prefix
  ``SAFESAIL_LLM_``);
* retries on connection errors, timeouts, HTTP 408, 429 and 5xx, with exponential backoff and jitter, and
  honours ``Retry-After`` / ``retry-after-ms``; any other HTTP error fails at once;
* :class:`LLMError` messages that name the URL, the HTTP status and the server's own error message, and never
  contain the API key (it is redacted even if the server echoes it back);
* an optional on-disk cache (one JSON file per request, written atomically) keyed by a hash of the model, the
  messages and the sampling parameters;
* :meth:`LLMClient.complete_many`: a bounded thread pool with a progress bar that returns one
  :class:`Completion` or :class:`LLMError` per request, in input order;
* cumulative accounting in :attr:`LLMClient.usage`; a reply without ``usage`` counts its tokens as unknown.

The transport is the standard library (``urllib``): no connection pooling, which is irrelevant next to LLM
latency, and no dependency for the stages that reuse this module. Redirects are refused, so the bearer token
is only ever sent to ``base_url``.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import logging
import os
import random
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, fields
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from safesail_guard.llm_config import Completion, LLMClientConfig, LLMError, LLMUsage, Message

__all__ = ["LLMClient"]

logger = logging.getLogger(__name__)

CACHE_SCHEMA_VERSION = 1
"""Version of the JSON files in ``cache_dir``; entries with another version are ignored (cache miss)."""

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_RESERVED_PARAMS = frozenset({"model", "messages", "stream", "n"})
_MAX_BODY_BYTES = 64 * 1024 * 1024
_SNIPPET_CHARS = 300
_USER_AGENT = "safesail-guard-llm-client/1"


class _Transient(Exception):
    """Internal: a connection problem or timeout worth retrying."""


class _Fatal(Exception):
    """Internal: a transport problem not worth retrying (e.g. TLS certificate rejected)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: the bearer token must only go to ``base_url``, and a POST must not become a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _snippet(text: str, limit: int = _SNIPPET_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _server_error_message(body: bytes) -> str:
    """The human part of an error body: OpenAI ``{"error": {"message"}}``, ``{"detail"}``, or the raw text."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _snippet(text) or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return _snippet(str(err["message"]))
        if isinstance(err, str) and err:
            return _snippet(err)
        for key in ("detail", "message"):
            if data.get(key):
                return _snippet(str(data[key]))
    return _snippet(text)


def _retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``Retry-After`` seconds / HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _check_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Validate one conversation and copy it into plain dicts (raises ``ValueError`` naming the problem)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}]['role'] must be one of {sorted(_ROLES)}, got {role!r}")
        if not isinstance(message.get("content"), (str, list)):
            raise ValueError(f"messages[{i}]['content'] must be a string (or a list of content parts)")
        out.append(dict(message))
    return out


def _token_count(usage: Any, key: str) -> int | None:
    if not isinstance(usage, dict):
        return None
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _message_text(content: Any) -> str | None:
    """Text of a message ``content``: a string, or the joined ``text`` parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(parts) if parts else None
    return None


class _ResponseCache:
    """On-disk cache: ``<dir>/<key[:2]>/<key>.json``; each file is written to a temp file then renamed."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cache_dir {str(self.directory)!r} cannot be created: {exc}") from exc

    @staticmethod
    def key(model: str, messages: list[dict[str, Any]], params: Mapping[str, Any]) -> str:
        material = {"model": model, "messages": messages, "params": dict(params)}
        blob = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cache entry %s: %s", path, exc)
            return None
        if not isinstance(data, dict) or data.get("schema_version") != CACHE_SCHEMA_VERSION:
            return None
        raw = data.get("completion")
        try:
            return Completion(**{**raw, "cached": True})
        except TypeError as exc:
            logger.warning("ignoring malformed cache entry %s: %s", path, exc)
            return None

    def put(self, key: str, completion: Completion, request: Mapping[str, Any]) -> None:
        path = self._path(key)
        record = {
            "schema_version": CACHE_SCHEMA_VERSION,
            "created_unix": time.time(),
            "request": dict(request),
            "completion": {**asdict(completion), "cached": False},
        }
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, ensure_ascii=False, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as exc:
            logger.warning("could not write cache entry %s: %s", path, exc)
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass


class LLMClient:
    """Blocking, thread-safe chat-completions client with retries, a response cache and usage accounting.

    Example::

        client = LLMClient(LLMClientConfig(base_url="http://127.0.0.1:8080/v1", model="qwen"))
        reply = client.complete([{"role": "user", "content": "Say hi"}], temperature=0.2)
        results = client.complete_many([[{"role": "user", "content": q}] for q in queries])
    """

    def __init__(self, config: LLMClientConfig) -> None:
        self.config = config
        self.url = f"{config.base_url}/chat/completions"
        host = urlsplit(self.url).hostname
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if _is_loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))  # a local server is never reached through a proxy
        self._opener = urllib.request.build_opener(*handlers)
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._lock = threading.Lock()
        self._usage = LLMUsage()
        self._rng = random.Random()
        self._cache = _ResponseCache(config.cache_dir) if config.cache_dir is not None else None
        self._secret = config.api_key.get_secret_value() if config.api_key is not None else None
        if self._secret and urlsplit(self.url).scheme == "http" and not _is_loopback(host):
            logger.warning("an API key will be sent over plain http to %s; prefer https", host)

    @property
    def usage(self) -> LLMUsage:
        """Snapshot of cumulative accounting since this client was created."""
        with self._lock:
            return self._usage

    def _count(self, **deltas: int) -> None:
        with self._lock:
            self._usage = LLMUsage(
                **{f.name: getattr(self._usage, f.name) + deltas.get(f.name, 0) for f in fields(LLMUsage)}
            )

    def _redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def _error(self, message: str, *, status: int | None = None, retryable: bool = False) -> LLMError:
        return LLMError(self._redact(message), url=self.url, status=status, retryable=retryable)

    def request_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Request parameters for one call: config defaults, overridden by ``params`` (None drops a key)."""
        reserved = sorted(_RESERVED_PARAMS.intersection(params))
        if reserved:
            raise ValueError(
                f"parameters {reserved} are set by the client and cannot be passed; "
                "use one client per model, and streaming / n>1 are not supported"
            )
        merged: dict[str, Any] = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        merged.update(params)
        return {k: v for k, v in merged.items() if v is not None}

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """One chat completion for ``messages``; ``params`` (temperature, max_tokens, top_p, seed, stop, ...)
        override the config for this call. Raises :class:`LLMError` when no text could be obtained and
        ``ValueError`` for malformed ``messages`` or reserved parameters."""
        body_messages = _check_messages(messages)
        body_params = self.request_params(params)
        self._count(requests=1)
        key = None
        if self._cache is not None:
            key = _ResponseCache.key(self.config.model, body_messages, body_params)
            hit = self._cache.get(key)
            if hit is not None:
                self._count(cached_hits=1)
                return hit
        payload = {"model": self.config.model, "messages": body_messages, **body_params}
        try:
            completion = self._post_with_retries(payload)
        except LLMError:
            self._count(failures=1)
            raise
        if completion.prompt_tokens is None or completion.completion_tokens is None:
            self._count(responses_without_usage=1)
        self._count(prompt_tokens=completion.prompt_tokens or 0, completion_tokens=completion.completion_tokens or 0)
        if self._cache is not None and key is not None:
            self._cache.put(key, completion, payload)
        return completion

    def complete_many(
        self,
        list_of_messages: Sequence[Sequence[Message]],
        progress: bool = True,
        *,
        on_result: Callable[[int, Completion | LLMError], None] | None = None,
        desc: str = "LLM requests",
        **params: Any,
    ) -> list[Completion | LLMError]:
        """Complete every conversation with at most ``config.concurrency`` in flight; results in input order.

        A failed request yields its :class:`LLMError` in place of a :class:`Completion` (nothing is raised for
        it). ``on_result(index, result)`` is called in the calling thread as each request finishes, so callers
        can persist results incrementally. All conversations are validated before any request is sent.
        """
        conversations = [_check_messages(m) for m in list_of_messages]
        self.request_params(params)  # reject reserved parameters before starting
        results: list[Completion | LLMError | None] = [None] * len(conversations)
        if not conversations:
            return []
        from tqdm.auto import tqdm

        failures = 0
        workers = min(self.config.concurrency, len(conversations))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm")
        try:
            with tqdm(total=len(conversations), desc=desc, unit="req", disable=not progress) as bar:
                pending: dict[Future[Completion], int] = {
                    pool.submit(self.complete, conv, **params): i for i, conv in enumerate(conversations)
                }
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = pending.pop(future)
                        try:
                            result: Completion | LLMError = future.result()
                        except LLMError as exc:
                            result = exc
                            failures += 1
                            bar.set_postfix(failed=failures)
                        results[index] = result
                        bar.update(1)
                        if on_result is not None:
                            on_result(index, result)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return [r for r in results if r is not None]

    # -- transport -----------------------------------------------------------------------------------------

    def _backoff_s(self, retry: int, retry_after: float | None) -> float:
        cap = self.config.backoff_max_s
        if retry_after is not None:
            return min(retry_after, cap)
        ceiling = min(cap, self.config.backoff_s * (2 ** (retry - 1)))
        return self._rng.uniform(ceiling / 2, ceiling)

    def _post_with_retries(self, payload: dict[str, Any]) -> Completion:
        attempts = 1 + self.config.max_retries
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                with self._slots:
                    self._count(http_attempts=1)
                    status, headers, body = self._send(payload)
            except _Transient as exc:
                err = self._error(f"POST {self.url} failed: {exc}", retryable=True)
            except _Fatal as exc:
                err = self._error(f"POST {self.url} failed: {exc}")
            else:
                if 200 <= status < 300:
                    try:
                        return self._parse(status, body, payload["model"])
                    except LLMError as parse_err:
                        parse_err.attempts = attempt
                        raise
                retryable = status in (408, 429) or 500 <= status <= 599
                if 300 <= status < 400:
                    location = headers.get("Location", "?") if headers else "?"
                    message = f"redirected to {location}; set base_url to the final API root"
                else:
                    message = _server_error_message(body)
                err = self._error(f"POST {self.url} returned HTTP {status}: {message}", status=status,
                                  retryable=retryable)
                retry_after = _retry_after_s(headers)
            err.attempts = attempt
            if not err.retryable or attempt == attempts:
                raise err
            delay = self._backoff_s(attempt, retry_after)
            logger.warning("%s; retry %d of %d in %.2fs", err.message, attempt, attempts - 1, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, payload: dict[str, Any]) -> tuple[int, Mapping[str, str] | None, bytes]:
        """POST ``payload``; returns (status, headers, body) for any HTTP reply, raises _Transient/_Fatal."""
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": _USER_AGENT}
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        deadline = time.monotonic() + self.config.timeout_s
        try:
            try:
                response = self._opener.open(request, timeout=self.config.timeout_s)
            except urllib.error.HTTPError as http_err:
                with http_err:
                    body = self._read_body(http_err, deadline) if http_err.fp is not None else b""
                return http_err.code, http_err.headers, body
            with response:
                return response.status, response.headers, self._read_body(response, deadline)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise _Fatal(f"TLS certificate rejected: {reason}") from exc
            if isinstance(reason, TimeoutError):
                raise _Transient(f"timed out after {self.config.timeout_s:g}s") from exc
            raise _Transient(f"cannot connect ({reason})") from exc
        except TimeoutError as exc:
            raise _Transient(f"timed out after {self.config.timeout_s:g}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"connection error ({type(exc).__name__}: {exc})") from exc

    def _read_body(self, response: Any, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = response.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > _MAX_BODY_BYTES:
                raise _Fatal(f"reply larger than {_MAX_BODY_BYTES} bytes")
            chunks.append(chunk)

    def _parse(self, status: int, body: bytes, requested_model: str) -> Completion:
        """Turn a 2xx body into a Completion, or raise a non-retryable LLMError saying what was wrong."""
        where = f"POST {self.url} returned HTTP {status}"
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._error(
                f"{where} with a body that is not JSON: {_snippet(body.decode('utf-8', 'replace'))!r}",
                status=status,
            ) from None
        if not isinstance(data, dict):
            raise self._error(f"{where} with a JSON {type(data).__name__}, expected an object", status=status)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            if data.get("error"):
                detail = _server_error_message(body)
                raise self._error(f"{where} with an error body: {detail}", status=status)
            raise self._error(f"{where} but the response has no 'choices' (keys: {sorted(data)})", status=status)
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise self._error(f"{where} but choices[0] has no 'message' object", status=status)
        text = _message_text(message.get("content"))
        if text is None:
            raise self._error(
                f"{where} but choices[0].message has no text content (finish_reason="
                f"{choice.get('finish_reason')!r})",
                status=status,
            )
        usage = data.get("usage")
        model = data.get("model") if isinstance(data.get("model"), str) and data.get("model") else requested_model
        finish = choice.get("finish_reason")
        return Completion(
            text=text,
            prompt_tokens=_token_count(usage, "prompt_tokens"),
            completion_tokens=_token_count(usage, "completion_tokens"),
            cached=False,
            model=model,
            finish_reason=finish if isinstance(finish, str) else None,
        )
