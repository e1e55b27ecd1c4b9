"""The package's dependency picture: no import cycles (imports inside functions included), and every module
imports only its own layer or lower ones, so the design can be read from the layers below."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pneumo_utils"

# lowest first: a module may import its own layer or any layer below it, never one above
LAYERS = {
    "base": ["config", "outputs", "reading", "records", "_quiet"],
    "inputs": ["images", "data"],
    "measures": ["evaluate", "subgroups", "scores"],
    "model": ["model"],
    "explanations, figures and answers": ["explain", "plots", "predict"],
    "runs": ["runs", "notebook", "explore", "explore_service", "explore_app"],
    "command line": ["cli"],
}


def _module_graph() -> dict[str, set[str]]:
    names = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }
    graph = {}
    for name, path in names.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {target for target in targets if target in names and target not in (name, "pneumo_utils")}
    return graph


def _layer_of(module: str) -> int:
    short = module.removeprefix("pneumo_utils.").split(".")[0]
    for rank, members in enumerate(LAYERS.values()):
        if short in members:
            return rank
    raise AssertionError(f"{module}: in no layer of tests/test_architecture.py; place it")


def test_there_is_no_import_cycle():
    graph = _module_graph()
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = path[path.index(target) :] + [target] if target in path else [module, target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_every_module_imports_only_its_layer_or_lower_ones():
    graph = _module_graph()
    wrong = [
        f"{module} ({list(LAYERS)[_layer_of(module)]}) imports {target} ({list(LAYERS)[_layer_of(target)]})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if _layer_of(target) > _layer_of(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_package_imports_sit_at_the_top_of_each_module():
    """The file heads show the design: no module outside ``cli/`` imports the package inside a function
    (``cli/`` does, so that ``pneumo --help`` and a mistyped flag answer without loading TensorFlow; so does
    ``explore.py``, whose functions run in the explorer's thin page kernels, which must not import TensorFlow:
    ``tests/test_explore_service.py`` checks that they do not)."""
    inside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts or path.name == "explore.py":
            continue
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [module or ""]
                if isinstance(node, ast.Import | ast.ImportFrom) and any(n.startswith("pneumo_utils") for n in names):
                    inside.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not inside, "imports inside functions: " + ", ".join(inside)


def test_the_exit_code_table_names_real_error_types():
    """``cli.EXIT_CODES`` names types as strings (so ``pneumo --help`` loads no TensorFlow): each must still be
    where it says, or its errors would end in a traceback instead of a one-line message."""
    import builtins
    import importlib

    from pneumo_utils.cli import EXIT_CODES

    for dotted, code in EXIT_CODES.items():
        module, _, name = dotted.rpartition(".")
        kind = getattr(builtins if module == "builtins" else importlib.import_module(module), name, None)
        assert isinstance(kind, type) and issubclass(kind, BaseException), f"{dotted}: no such error type"
        assert f"{kind.__module__}.{kind.__qualname__}" == dotted, f"{dotted}: defined as {kind.__module__}"
        assert code in (1, 2, 130)
