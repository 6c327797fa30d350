"""The policies shipped with safesail-guard (installed as the package ``safesail_policies``).

``default.yaml`` flags and blocks, ``monitor.yaml`` only logs, ``strict.yaml`` blocks eagerly; the grammar is in
``README.md`` next to them and ``examples/cases.yaml`` is a sample case file for ``safesail policy test``.
Files are found through ``importlib.resources``, so this works from a wheel as well as from the checkout.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SUFFIXES = (".yaml", ".yml")


def policy_dir() -> Path:
    """The directory holding the shipped policy files."""
    return Path(str(files(__name__)))


def list_policies() -> list[str]:
    """Names of the shipped policies (file stems), sorted: e.g. ``["default", "monitor", "strict"]``."""
    return sorted(p.stem for p in policy_dir().iterdir() if p.suffix in SUFFIXES and p.is_file())


def policy_path(name_or_path: str | Path) -> Path:
    """Resolve a shipped policy name (``"default"`` or ``"default.yaml"``) or an existing file to its path.

    An existing file wins over a shipped name. Raises ``FileNotFoundError`` naming the shipped policies when
    neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    stem = name[: -len(suffix)] if (suffix := next((s for s in SUFFIXES if name.endswith(s)), "")) else name
    if "/" not in stem and "\\" not in stem and stem in list_policies():
        shipped = next(policy_dir() / f"{stem}{s}" for s in SUFFIXES if (policy_dir() / f"{stem}{s}").is_file())
        return shipped
    raise FileNotFoundError(
        f"no policy file {name!r}; shipped policies: {', '.join(list_policies())} (or give a path to a YAML file)"
    )


__all__ = ["list_policies", "policy_dir", "policy_path"]
