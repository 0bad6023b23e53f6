"""docs/architecture.md's module tables match the tree, and its pure modules are the ones whose
imports `lint-imports` checks (pyproject.toml, the "pure" contracts).

In a table's first column, `name` is the module name.py or the package name/ (its
__init__.py), `name/*` every module of the package name/, `name/sub` (or `name.sub`) one
module of it (which lists the package too).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
PYPROJECT = REPO_ROOT / "pyproject.toml"
# The table of each package: (package, a word of the heading above its table).
TABLES = {
    "scanner": "Scanner modules",
    "store_server": "Server modules",
    "store_beacon": "Shared by both programs",
    "lab": "The lab",
}
# Entry points of a package, documented by its `cli` row.
ENTRY_FILES = {"__init__.py", "__main__.py"}
_BACKTICKED = re.compile(r"`([^`]+)`")


def tree_modules(package: str) -> set[str]:
    """Modules of ``package`` as slash paths relative to it: "frames", "views/staff"."""
    root = REPO_ROOT / package
    found: set[str] = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if len(relative.parts) == 1 and relative.name in ENTRY_FILES:
            continue
        if relative.name == "__init__.py":
            found.add(relative.parent.as_posix())
        else:
            found.add(relative.with_suffix("").as_posix())
    return found


def doc_table(heading: str) -> list[tuple[list[str], str]]:
    """Rows of the module table under the `##` heading that starts with ``heading``."""
    lines = ARCHITECTURE.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"## {heading}")]
    assert len(starts) == 1, f"docs/architecture.md: one '## {heading}...' section expected"
    rows: list[tuple[list[str], str]] = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or cells[0] in ("module", "---"):
            continue
        rows.append((_BACKTICKED.findall(cells[0]), cells[1]))
    assert rows, f"docs/architecture.md: no module table under '## {heading}'"
    return rows


def covered(entry: str, modules: set[str]) -> set[str]:
    entry = entry.replace(".", "/")  # `storage.database` and `storage/database` alike
    if entry.endswith("/*"):
        prefix = entry[:-1]
        return {m for m in modules if m.startswith(prefix) or m == entry[:-2]}
    return {entry} & modules


@pytest.mark.parametrize("package", sorted(TABLES))
def test_module_table_matches_the_tree(package: str) -> None:
    modules = tree_modules(package)
    entries = [e for names, _ in doc_table(TABLES[package]) for e in names]
    listed: set[str] = set()
    for entry in entries:
        matched = covered(entry, modules)
        assert matched, f"docs/architecture.md lists `{entry}`, which is not a {package} module"
        listed |= matched
    # A package is listed through its modules (`storage.database` lists `storage` too).
    listed |= {m for m in modules if any(x.startswith(m + "/") for x in listed)}
    unlisted = sorted(modules - listed)
    assert not unlisted, f"{package} modules missing from docs/architecture.md: {unlisted}"


def test_documented_pure_modules_are_the_checked_ones() -> None:
    """A module the docs call pure is in a "pure" import contract, and only those are."""
    contracts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"][
        "contracts"
    ]
    checked = {
        module
        for contract in contracts
        if "pure" in contract["name"]
        for module in contract["source_modules"]
    }
    documented: set[str] = set()
    for package, heading in TABLES.items():
        modules = tree_modules(package)
        for names, purity in doc_table(heading):
            if not purity.startswith("pure"):  # "pure (numpy)": pure, with what it uses
                continue
            for entry in names:
                documented |= {f"{package}.{m.replace('/', '.')}" for m in covered(entry, modules)}
    assert documented, "no pure module found in docs/architecture.md"
    assert documented == checked, (
        f"documented pure, not checked: {sorted(documented - checked)}; "
        f"checked, not documented pure: {sorted(checked - documented)}"
    )


def test_a_store_server_on_sqlite_does_not_load_psycopg() -> None:
    """psycopg and its pool (about 9 MB resident) load only when a PostgreSQL database is
    opened: the modules a SQLite store server runs import neither."""
    code = (
        "import sys\n"
        "import store_server.app, store_server.cli, store_server.identity_load\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('psycopg')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert done.stdout.strip() == "[]"
