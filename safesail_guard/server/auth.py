"""Client API keys: loaded from a file or an environment variable, checked in constant time, never logged.

Key file format: one key per line, ``id: key`` or just ``key``; blank lines and ``#`` comments are skipped.
A key without an id gets ``key-<first 8 hex of its sha256>`` as its id: that id (never the key) is what the
audit log, traces and headers carry. The environment variable holds comma-separated keys in the same forms.

`authorize` is what every keyed route calls (`server/routes.py`, `server/ui_routes.py`) with the `KeyStore` the
app's lifespan loaded into `ServerState`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from safesail_guard.server.errors import APIError

MIN_KEY_CHARS = 16


class KeyConfigError(ValueError):
    """The key file or variable cannot be used (the message says which line)."""


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: its id and the sha256 of its bytes (the key itself is not kept)."""

    id: str
    digest: bytes


def _default_id(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def _parse(entry: str, where: str) -> ApiKey:
    entry = entry.strip()
    key_id, sep, key = entry.partition(":")
    if not sep:
        key_id, key = "", entry
    key_id, key = key_id.strip(), key.strip()
    if len(key) < MIN_KEY_CHARS:
        raise KeyConfigError(f"{where}: an API key needs at least {MIN_KEY_CHARS} characters")
    if any(c.isspace() for c in key):
        raise KeyConfigError(f"{where}: an API key must not contain whitespace")
    return ApiKey(key_id or _default_id(key), hashlib.sha256(key.encode()).digest())


class KeyStore:
    """The accepted keys; ``enabled`` is False when none are configured (the server is then open)."""

    def __init__(self, keys: list[ApiKey]) -> None:
        ids = [k.id for k in keys]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise KeyConfigError(f"duplicate API key id(s): {', '.join(dup)}")
        self._keys = keys

    @classmethod
    def load(cls, path: Path | None = None, env_var: str | None = "SAFESAIL_API_KEYS",
             environ: Mapping[str, str] | None = None) -> KeyStore:
        """Keys from ``path`` (if given) plus those in ``$env_var`` (if set)."""
        environ = os.environ if environ is None else environ
        keys: list[ApiKey] = []
        if path is not None:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise KeyConfigError(f"cannot read the API key file {path}: {e}") from None
            for n, line in enumerate(lines, 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    keys.append(_parse(line, f"{path}:{n}"))
            if not keys:
                raise KeyConfigError(f"the API key file {path} holds no key")
        raw = environ.get(env_var, "") if env_var else ""
        for i, entry in enumerate(e for e in raw.split(",") if e.strip()):
            keys.append(_parse(entry, f"${env_var} entry {i + 1}"))
        return cls(keys)

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured."""
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, authorization: str | None) -> str | None:
        """The key id for an ``Authorization: Bearer <key>`` header; None when keys are off.

        Raises `APIError` 401 for a missing, malformed or unknown key. Every configured key is compared
        (constant time per key, no early exit), so timing does not tell which prefix matched.
        """
        if not self._keys:
            return None
        if not authorization:
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "malformed Authorization header: expected 'Bearer <key>'", code="invalid_api_key")
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        found: str | None = None
        for k in self._keys:
            if hmac.compare_digest(digest, k.digest) and found is None:
                found = k.id
        if found is None:
            raise APIError(401, "invalid API key", code="invalid_api_key")
        return found


def authorize(request: Request, keys: KeyStore) -> str | None:
    """The key id of the request's ``Authorization`` header (None when keys are off); 401 otherwise."""
    return keys.check(request.headers.get("authorization"))
