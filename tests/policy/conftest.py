"""Fixtures for the policy tests: a small hand-built feature catalog, and `safesail_policies` from the checkout.

An editable install made before `policies/` became a package does not map `safesail_policies` yet (the next
`make` bootstrap does); the fixture below then loads it from the checkout so these tests do not depend on
when the environment was last bootstrapped.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.policy.builders import make_catalog

POLICIES_DIR = Path(__file__).resolve().parents[2] / "policies"


def _ensure_policies_package() -> None:
    try:
        import safesail_policies  # noqa: F401
    except ModuleNotFoundError:
        spec = importlib.util.spec_from_file_location(
            "safesail_policies", POLICIES_DIR / "__init__.py", submodule_search_locations=[str(POLICIES_DIR)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["safesail_policies"] = module
        spec.loader.exec_module(module)


_ensure_policies_package()


@pytest.fixture()
def catalog():
    return make_catalog()
