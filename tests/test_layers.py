"""The packages are layers: a module imports only from its own layer and the layers below it,
and no modules import each other in a cycle. Read from the source (every import statement,
those inside functions too), so that a new module is checked as soon as it exists."""
import ast
import os

from support.helpers import ROOT

# From the top down: the names (packages, or modules at the top) of each layer.
LAYERS = [
    ("the entry", {"app"}),
    ("the server runtime", {"server"}),
    ("the HTTP API, the inbox page, the CLI, identity and input validation",
     {"api", "inbox", "cli", "auth", "schemas"}),
    ("the chat rules", {"chat"}),
    ("the event log and its deliveries", {"events"}),
    ("storage and settings", {"storage", "models", "settings"}),
]
NOT_THE_SERVICE = {"tests", "bench", "docs", ".venv", ".git", "instance", "test-artifacts"}


def service_modules():
    """{module name: its file} for every module of the service."""
    found = {}
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in NOT_THE_SERVICE
                         and not name.startswith((".", "__"))]
        for name in files:
            if name.endswith(".py"):
                path = os.path.relpath(os.path.join(folder, name), ROOT)
                parts = path[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = os.path.join(ROOT, path)
    return found


def imports_of(path, modules):
    """The service's modules that the file at `path` imports."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        imported |= {name for name in names if name in modules}
    return imported


def layer_of(module):
    top = module.split(".")[0]
    for index, (_, names) in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def import_graph():
    modules = service_modules()
    return {module: imports_of(path, modules) - {module} for module, path in modules.items()}


def test_every_module_imports_only_its_own_layer_and_those_below():
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {other} "
              f"({LAYERS[layer_of(other)][0]})"
              for module, imported in sorted(import_graph().items()) for other in sorted(imported)
              if layer_of(other) < layer_of(module)]
    assert upward == []


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_modules_import_each_other_in_a_cycle():
    assert cycles(import_graph()) == []


def test_the_check_sees_a_cycle_and_an_upward_import():
    """The checks above, on a made-up graph: they can fail."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("storage.queries") > layer_of("chat.chats") > layer_of("api.customer")


def external_imports_of(path):
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_quarantine_module_imports_waitress():
    """waitress's internals are used in server/waitress_internals.py alone (the one place to
    re-check against a new release)."""
    importers = sorted(module for module, path in service_modules().items()
                       if "waitress" in external_imports_of(path))
    assert importers == ["server.waitress_internals"]
