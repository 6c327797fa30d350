"""The docs stay true by construction: every feature id, path, Python name and JSON/YAML example in
README.md, policies/README.md and docs/ is looked up, parsed or run here (commands: `test_docs_commands.py`).

- Feature ids (``14_4141``) must exist in the shipped database, so a rebuild that renumbers features fails
  the suite instead of a newcomer's first copy-and-paste.
- Repository paths and ``safesail_*`` dotted names in code spans exist; every import in a Python block
  imports; each file and module the README's layout names exists.
- JSON blocks parse, and the proxy's verdict example has the keys a real response has; YAML blocks parse, and
  every rule example of the policy grammar passes `safesail policy validate` on the shipped database.
- The README's OpenAI-client quickstart runs against a live test server, its Python section on the embedded
  model (slow), and the policy README's Python block against the shipped database.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from safesail_guard.cli import app
from tests.docs.markdown import ROOT, Snippet, doc_files, feature_ids, snippets
from tests.docs.shipped import shipped_domains, shipped_feature_ids

DOCS = doc_files()
DOC_IDS = [str(p.relative_to(ROOT)) for p in DOCS]
runner = CliRunner()


# -- feature ids ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_feature_ids_exist_in_the_shipped_database(path: Path) -> None:
    known = shipped_feature_ids()
    missing = [f"{path.relative_to(ROOT)}:{line}: {fid}" for line, fid in feature_ids(path) if fid not in known]
    assert not missing, ("feature ids the shipped database does not have (find real ones with "
                         "`safesail db search`):\n" + "\n".join(missing))


# -- paths and Python names -------------------------------------------------------------------------------------
_TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} - {"runs", "build"}
_PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)+/?$")


@pytest.mark.parametrize("path", [p for p in DOCS if p.name != "decisions.md"],
                         ids=[i for i, p in zip(DOC_IDS, DOCS) if p.name != "decisions.md"])
def test_repository_paths_exist(path: Path) -> None:
    """Paths in code spans that start at a top-level folder of the checkout (or next to the page) exist.
    (docs/decisions.md is a history and may name files as they were.)"""
    missing = []
    for snip in snippets(path):
        if snip.lang != "inline":
            continue
        for tok in snip.text.split():
            tok = tok.strip("(),;:'\"")
            if not _PATH.match(tok) or "://" in tok:
                continue
            first = tok.split("/", 1)[0]
            if first in {"runs", "build"}:  # build outputs, not committed
                continue
            base = ROOT if first in _TOP else path.parent if (path.parent / first).exists() else None
            if base is not None and not (base / tok).exists():
                missing.append(f"{snip.where}: {tok}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


_DOTTED = re.compile(r"\b(safesail_(?:guard|neuron_db|training|policies)(?:\.\w+)+)((?:/\w+)*)")


def resolve_dotted(name: str) -> Any:
    """Import the longest module prefix of ``name`` and get the rest as attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as exc:
            if exc.name is not None and not ".".join(parts[:i]).startswith(exc.name):
                raise
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


@pytest.mark.parametrize("path", [p for p in DOCS if p.name != "decisions.md"],
                         ids=[i for i, p in zip(DOC_IDS, DOCS) if p.name != "decisions.md"])
def test_python_names_and_imports_resolve(path: Path) -> None:
    """``safesail_guard.x.y`` in a code span names something real; every import in a Python block imports."""
    problems = []
    for snip in snippets(path):
        names: list[str] = []
        if snip.lang == "inline":
            for m in _DOTTED.finditer(snip.text):
                module = m.group(1).rsplit(".", 1)[0]
                names.append(m.group(1))
                names += [f"{module}.{alt}" for alt in m.group(2).split("/") if alt]  # a.b.f/g: a.b.f and a.b.g
        elif snip.lang == "python":
            try:
                tree = ast.parse(snip.text)
            except SyntaxError as exc:
                problems.append(f"{snip.where}: not Python: {exc}")
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names += [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names += [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            try:
                resolve_dotted(name)
            except (ImportError, AttributeError) as exc:
                problems.append(f"{snip.where}: {name}: {exc}")
    assert not problems, "\n".join(problems)


# -- JSON and YAML examples -------------------------------------------------------------------------------------
def blocks(lang: str) -> list[Snippet]:
    return [s for p in DOCS for s in snippets(p) if s.lang == lang]


@pytest.mark.parametrize("snip", blocks("json"), ids=lambda s: s.where)
def test_json_blocks_parse(snip: Snippet) -> None:
    try:
        json.loads(snip.text)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{snip.where}: not JSON: {exc}") from None


@pytest.mark.parametrize("snip", blocks("yaml"), ids=lambda s: s.where)
def test_yaml_blocks_parse(snip: Snippet) -> None:
    try:
        yaml.safe_load(snip.text)
    except yaml.YAMLError as exc:
        raise AssertionError(f"{snip.where}: not YAML: {exc}") from None


def verdict_examples() -> list[tuple[Snippet, dict[str, Any]]]:
    """JSON blocks that show a completion with its ``safesail`` field."""
    out = []
    for snip in blocks("json"):
        try:
            doc = json.loads(snip.text)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("safesail"), dict):
            out.append((snip, doc))
    return out


@pytest.fixture(scope="module")
def server_harness(llama_guard: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The proxy on the tiny Llama guard with a policy that logs any feature (rules and features in verdicts)."""
    from tests.server.conftest import ALLOW_POLICY, Harness

    harness = Harness(llama_guard, tmp_path_factory.mktemp("docs_server"), ALLOW_POLICY)
    yield harness
    harness.audit.close()


@pytest.fixture(scope="module")
def real_completion(server_harness: Any) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    steer = [{"feature_id": next(iter(server_harness.guarded.guard.catalog)), "op": "clamp", "value": 0.0}]
    with TestClient(server_harness.app) as client:
        r = client.post("/v1/chat/completions",
                        json=server_harness.chat(max_tokens=4, temperature=0, safesail={"steer": steer}))
    assert r.status_code == 200, r.text
    assert r.json()["safesail"]["steering"], "the request asked to steer"
    return r.json()


OPTIONAL_VERDICT_KEYS = {"tokens", "upstream"}
"""Keys the ``safesail`` field has only on request (``tokens``) or in upstream mode."""


def test_the_proxy_doc_shows_a_verdict() -> None:
    assert any(s.path.name == "proxy.md" for s, _ in verdict_examples()), "docs/proxy.md lost its verdict example"


@pytest.mark.parametrize("example", verdict_examples(), ids=lambda e: e[0].where)
def test_verdict_examples_have_the_keys_the_server_emits(example: tuple[Snippet, dict[str, Any]],
                                                         real_completion: dict[str, Any]) -> None:
    snip, completion = example
    assert set(completion) == set(real_completion), f"{snip.where}: completion keys"
    assert set(completion["choices"][0]) == set(real_completion["choices"][0]), f"{snip.where}: choices[0]"
    shown, real_verdict = completion["safesail"], real_completion["safesail"]
    assert set(shown) - OPTIONAL_VERDICT_KEYS == set(real_verdict) - OPTIONAL_VERDICT_KEYS, snip.where
    for stage in ("prompt", "final"):
        if isinstance(shown.get(stage), dict):
            assert set(shown[stage]) == set(real_verdict[stage]), f"{snip.where}: {stage}"
            for rule in shown[stage].get("rules", []):
                assert set(rule) == set(real_verdict[stage]["rules"][0]), f"{snip.where}: {stage}.rules"
    real_feature_keys = {k for f in real_verdict["top_features"] for k in f} | {"contribution"}
    for feature in shown["top_features"]:
        assert {"id", "layer", "index", "activation", "normalized", "explanation", "position"} <= set(feature)
        assert set(feature) <= real_feature_keys, f"{snip.where}: top_features"
        assert feature["id"] == f"{feature['layer']}_{feature['index']}"
    assert set(shown["concepts"]) <= set(real_verdict["concepts"]) | shipped_domains(), snip.where
    for op in shown["steering"]:
        assert set(op) == set(real_verdict["steering"][0]), f"{snip.where}: steering"


# -- Python examples --------------------------------------------------------------------------------------------
def python_block(path: Path, marker: str) -> Snippet:
    """The Python block of ``path`` that contains ``marker``."""
    found = [s for s in snippets(path) if s.lang == "python" and marker in s.text]
    assert len(found) == 1, f"{path.relative_to(ROOT)}: expected one Python block with {marker!r}"
    return found[0]


def test_readme_quickstart_works_against_a_live_server(server_harness: Any) -> None:
    """The README's OpenAI-client snippet, with only the base URL and model id changed, on a real server."""
    from safesail_guard.models import EMBEDDED_NAME
    from tests.server.live import LiveServer

    snip = python_block(ROOT / "README.md", "from openai import OpenAI")
    code = snip.text
    assert code.count('"http://127.0.0.1:8000/v1"') == 1 and code.count(f'"{EMBEDDED_NAME}"') == 1, snip.where
    with LiveServer(server_harness.app) as live:
        code = code.replace('"http://127.0.0.1:8000/v1"', repr(f"{live.url}/v1"))
        code = code.replace(f'"{EMBEDDED_NAME}"', repr(server_harness.model_id))
        namespace: dict[str, Any] = {}
        exec(compile(code, snip.where, "exec"), namespace)  # noqa: S102 - our own README
    r = namespace["r"]
    assert r.choices[0].finish_reason in ("stop", "length", "content_filter")
    assert {"decision", "rules", "score", "concepts", "top_features"} <= set(r.model_extra["safesail"])


def test_policy_readme_python_runs_on_the_shipped_database() -> None:
    snip = python_block(ROOT / "policies" / "README.md", "compile_policy")
    namespace: dict[str, Any] = {"tokens": []}  # the block's "prompt then response" tokens: none here
    exec(compile(snip.text, snip.where, "exec"), namespace)  # noqa: S102
    assert namespace["decision"].action in ("allow", "log", "steer", "flag", "block")


@pytest.mark.slow
def test_readme_python_section_runs_on_the_embedded_model() -> None:
    snip = python_block(ROOT / "README.md", "Guard.from_db()")
    namespace: dict[str, Any] = {}
    exec(compile(snip.text, snip.where, "exec"), namespace)  # noqa: S102
    assert namespace["out"].finish_reason in ("stop", "length", "content_filter")


# -- the README's layout ----------------------------------------------------------------------------------------
def test_readme_layout_names_only_what_exists() -> None:
    """Each ``file.py``/``file.md``, ``folder/`` and ``folder/ (module, module)`` of the README's layout block
    exists under the folder its line starts with, so a moved or renamed module fails here."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):]
    block = next(s for s in snippets(ROOT / "README.md") if s.lang == "text" and s.text in layout)
    missing: list[str] = []
    top = ROOT
    for line in block.text.splitlines():
        if line and not line[0].isspace():
            first, _, line = line.partition(" ")
            top = ROOT / first
            if not top.is_dir():
                missing.append(first)
        for sub, items in re.findall(r"([\w/]+)/ \(([^)]*)\)", line):
            names = [i.strip() for i in items.split(",")]
            if all(n.isidentifier() for n in names):  # a module list, not a description
                missing += [f"{sub}/{n}" for n in names
                            if not (top / sub / f"{n}.py").is_file() and not (top / sub / n).is_dir()]
        for name in re.findall(r"(?<![\w/<])([\w/]+\.(?:py|md)|[\w]+/)(?![\w<])", re.sub(r"\([^)]*\)", "", line)):
            if not (top / name).exists() and not (ROOT / name).exists():
                missing.append(name)
    assert not missing, f"README.md layout names what does not exist under its folder: {missing}"


# -- the policy grammar's examples ------------------------------------------------------------------------------
def policy_examples() -> list[tuple[Snippet, str]]:
    """(block, policy file text) for each rule example of policies/README.md: a ``- name:`` rule list as the
    policy's rules, each top-level ``when:`` as the condition of a one-rule flag policy."""
    out: list[tuple[Snippet, str]] = []
    head = "version: 1\nname: docs_example\nrules:\n"
    for snip in snippets(ROOT / "policies" / "README.md"):
        if snip.lang != "yaml":
            continue
        lines = [line for line in snip.text.splitlines() if line.strip() and not line.startswith("#")]
        if lines and lines[0].startswith("- name:"):
            out.append((snip, head + "\n".join("  " + line for line in snip.text.splitlines())))
        elif lines and lines[0].startswith("when:"):
            chunks: list[list[str]] = []
            for line in lines:
                if line.startswith("when:"):
                    chunks.append([])
                chunks[-1].append(line)
            for chunk in chunks:
                body = "\n".join("    " + line for line in chunk)
                out.append((snip, head + f"  - name: example\n    action: flag\n{body}"))
    return out


@pytest.mark.parametrize("example", policy_examples(), ids=lambda e: e[0].where)
def test_policy_readme_rule_examples_compile_on_the_shipped_database(example: tuple[Snippet, str],
                                                                     tmp_path: Path) -> None:
    snip, text = example
    path = tmp_path / "example.yaml"
    path.write_text(text, encoding="utf-8")
    res = runner.invoke(app, ["policy", "validate", str(path)])
    assert res.exit_code == 0, f"{snip.where}: `safesail policy validate` refuses the example:\n{res.output}"


def test_policy_readme_has_rule_examples() -> None:
    assert len(policy_examples()) >= 8


def test_policy_readme_cases_example_loads() -> None:
    from safesail_guard.policy.cases import load_cases

    found = [s for s in snippets(ROOT / "policies" / "README.md") if s.lang == "yaml" and "\ncases:" in s.text]
    assert len(found) == 1
    cases = load_cases(found[0].text)
    assert [c.expect for c in cases.cases] == ["allow", "block"]
