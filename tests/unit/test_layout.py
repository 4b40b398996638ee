"""The house rules that the import contracts (.importlinter, run by `make test`) do not cover:
module sizes, the README as a front page, docs links that resolve, tests that share helpers
through tests/support.py rather than conftest.py, and each contract constant defined once."""
from __future__ import annotations

import ast
import re
import subprocess

import pytest

from tests.support import ROOT

MAX_MODULE_LINES = 600
MAX_README_BYTES = 8000


def tracked(pattern: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if (ROOT / line).exists()]


def test_no_module_outside_tests_is_over_600_lines():
    long = {f: n for f in tracked("*.py") if not f.startswith("tests/")
            and (n := len((ROOT / f).read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules (at most {MAX_MODULE_LINES} lines): {long}"


def test_readme_is_a_front_page():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes; move the details into docs/"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", ["README.md", *tracked("docs/*.md"), *tracked("docs/**/*.md")])
def test_docs_links_resolve_inside_the_repository(page):
    path = ROOT / page
    broken = []
    for target in LINK.findall(path.read_text()):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        file = (path.parent / target.split("#", 1)[0]).resolve()
        if not file.is_relative_to(ROOT) or not file.exists():
            broken.append(target)
    assert not broken, f"{page}: links to nothing in the repository: {broken}"


def test_no_test_imports_conftest():
    offenders = []
    for f in tracked("tests/*.py") + tracked("tests/**/*.py"):
        for node in ast.walk(ast.parse((ROOT / f).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] == "conftest":
                offenders.append(f)
    assert not offenders, f"import shared helpers from tests.support, not conftest: {offenders}"


@pytest.mark.parametrize("literal", ['"facedit-pack/1"', '"custom/"', '"istrc/"', '"facedit:pack"', '"facedit:latent:"'])
def test_contract_constants_are_defined_once(literal):
    """Each rule of the contract lives in facedit_core; everything else imports it."""
    holders = [f for f in tracked("*.py") if not f.startswith("tests/") and literal in (ROOT / f).read_text()]
    assert len(holders) == 1 and holders[0].startswith("facedit_core/"), f"{literal} appears in {holders}"
