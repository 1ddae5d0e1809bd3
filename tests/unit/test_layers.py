"""The package's layers, read from its import statements (function-level ones too): no circles, the
OCI client imports nothing of imgtrack but its errors and file helpers, the lower layers never reach
up into the commands or the CLI, and a command never imports another (but for push, which records its
source first, and the server hook, which runs the client hook's checks)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "imgtrack"
LOWER = (
    "imgtrack.ledger",
    "imgtrack.policy",
    "imgtrack.versions",
    "imgtrack.config",
    "imgtrack.gitrepo",
    "imgtrack.errors",
    "imgtrack.fsutil",
    "imgtrack.sources",
    "imgtrack.workloads",
    "imgtrack.cienv",
    "imgtrack.artifact",
    "imgtrack.provenance",
    "imgtrack.oci",
)
HIGHER = (
    "imgtrack.commands",
    "imgtrack.cli",
    "imgtrack.cli_hook",
    "imgtrack.exits",
    "imgtrack.output",
    "imgtrack.project",
    "imgtrack.completion",
    "imgtrack.ci_job",
)
# push records its source first; deploy --to promotes the build first; the server's hook runs the
# client hook's checks.
COMMAND_EDGES_ALLOWED = {
    ("imgtrack.commands.push", "imgtrack.commands.record"),
    ("imgtrack.commands.deploy", "imgtrack.commands.push"),
    ("imgtrack.commands.prereceive", "imgtrack.commands.prepush"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imgtrack"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("imgtrack."))
        graph[name] = {d for d in deps if d in modules and d not in (name, "imgtrack")}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_relative_imports() -> None:
    """The layer checks read absolute imports: a relative one would slip past them."""
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and node.level), name


def test_no_import_circles() -> None:
    assert _circles(_graph()) == []


def test_the_oci_client_imports_only_its_own_and_errors_and_file_helpers() -> None:
    for module, deps in _graph().items():
        if module.startswith("imgtrack.oci"):
            assert all(d.startswith("imgtrack.oci") or d in ("imgtrack.errors", "imgtrack.fsutil") for d in deps), (
                module,
                deps,
            )


def test_lower_layers_never_import_commands_or_the_cli() -> None:
    for module, deps in _graph().items():
        if module.startswith(LOWER):
            assert not [d for d in deps if d.startswith(HIGHER)], module


def test_a_command_imports_no_other_command() -> None:
    for module, deps in _graph().items():
        if module.startswith("imgtrack.commands."):
            others = {d for d in deps if d.startswith("imgtrack.commands.")} - {
                b for a, b in COMMAND_EDGES_ALLOWED if a == module
            }
            assert not others, (module, others)


def _caught_names(handler: ast.ExceptHandler) -> set[str]:
    """The dotted names an `except` clause catches (`httpx.TransportError`, `http.client.HTTPException`)."""
    names = set()
    for node in ast.walk(handler.type) if handler.type is not None else ():
        if isinstance(node, ast.Attribute):
            names.add(ast.unparse(node))
    return names


def test_network_errors_are_translated_in_the_transport_alone() -> None:
    """What httpx or http.client raise becomes an imgtrack error in one module, for both roads to a registry."""
    catching = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and any(
                n.startswith(("httpx.", "http.client.")) for n in _caught_names(node)
            ):
                catching.add(name)
    assert catching == {"imgtrack.oci.remote.transport"}
