"""Errors raised by the built-in corpora (concept pairs, taxonomy).

`CorpusError` subclasses `ValueError` so callers that already handle bad input generically keep working; its
message always says where the problem is (file and 1-based line when there is one) and what is wrong.

Raised by the loaders of this package (`pairs`, `general`, `safety.load`, `safety.handwritten`) and by the
style probe loader of `safesail_training.style_check`; the CLI shows it as a one-line user error.
"""

from __future__ import annotations


class CorpusError(ValueError):
    """A corpus file, line or filter is invalid.

    Attributes:
        path: the file the problem was found in, or None when it is not tied to a file (e.g. an empty filter).
        line: the 1-based line number inside `path`, or None.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
