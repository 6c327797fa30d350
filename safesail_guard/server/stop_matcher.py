"""`StopMatcher`: a request's ``stop`` sequences applied to streamed text.

The local backend (`server/local_backend.py`) pushes every delta the guarded model releases through it and
sends only what it returns; when a stop sequence completes, the generation ends there and the released text is
judged again (`LocalBackend._stopped`).
"""

from __future__ import annotations


class StopMatcher:
    """Cuts text at the first stop sequence, holding back a tail that could still become one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self._keep = max((len(s) for s in stops), default=1) - 1
        self._buf = ""
        self.hit = False

    def push(self, piece: str) -> str:
        """Add ``piece``; returns the text safe to emit now."""
        if self.hit:
            return ""
        if not self.stops:
            return piece
        self._buf += piece
        cuts = [i for i in (self._buf.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.hit = True
            out, self._buf = self._buf[:min(cuts)], ""
            return out
        cut = max(0, len(self._buf) - self._keep)
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return out

    def flush(self) -> str:
        """The held-back tail at the end of the text."""
        out, self._buf = ("" if self.hit else self._buf), ""
        return out


__all__ = ["StopMatcher"]
