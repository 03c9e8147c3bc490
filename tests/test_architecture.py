"""The package's shape: imports run one way (library -> stages -> workflow), no cycles, no import hidden in a function
body to dodge one, mlflow imported by the tracking package alone, light modules that stay light, short modules, and
the public API unchanged.

Run alone: ``pytest tests/test_architecture.py``. The import graph is read from the source (ast), so it covers
imports inside functions too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "lpntk"

#: Each module's layer; a module may import only from its own layer or below (and never in a cycle).
LAYERS = {
    0: {
        "io",
        "paper",
        "plan",
        "config",
        "reference_run",
        "tracking",
        "progress",
        "cost",
        "workload",
        "cli",
        "__main__",
        "resources",
        "inference",
        "timing",
        "paths",
        "dag",
        "methods",
        "plugins",
    },
    1: {"sources", "data", "models", "grams"},
    2: {"grad_sample"},
    3: {"kernel", "resume", "precision", "optim"},
    4: {"dynamics", "train", "lockstep"},
    5: {"relations", "difficulty", "forgetting", "scores", "clustering", "pruning", "gallery", "figures", "claims"},
    6: {"stages"},
}
#: Modules a workflow job that computes almost nothing imports (with their own imports): never torch, never mlflow.
LIGHT = [
    "lpntk",
    "lpntk.config",
    "lpntk.plan",
    "lpntk.paths",
    "lpntk.dag",
    "lpntk.methods",
    "lpntk.plugins",
    "lpntk.cost",
    "lpntk.workload",
    "lpntk.cli",
    "lpntk.resources",
    "lpntk.tracking",
    "lpntk.paper",
    "lpntk.stages.common",
    "lpntk.stages.select_reference_stage",
    "lpntk.stages.scores_stage",
    "lpntk.stages.cluster_stage",
    "lpntk.stages.prune_stage",
    "lpntk.stages.pruning_table_stage",
    "lpntk.stages.summary_stage",
    "lpntk.stages.forgetting_table_stage",
    "lpntk.stages.claims_stage",
    "lpntk.stages.gallery_stage",
]
MAX_LINES = 450
REASON = "Longer than 450 lines because"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function body?, line) for every lpntk import of a module."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_function: bool, in_type_checking: bool):
        for child in ast.iter_child_nodes(node):
            func = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            tc = in_type_checking or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import) and not tc:
                found.extend((a.name, in_function, child.lineno) for a in child.names if a.name.startswith("lpntk"))
            elif isinstance(child, ast.ImportFrom) and not tc:
                target = _resolve(module, path.name == "__init__.py", child)
                if target.startswith("lpntk"):
                    for a in child.names:  # `from . import x` imports the submodule x
                        sub = f"{target}.{a.name}"
                        found.append((sub if sub in MODULES else target, in_function, child.lineno))
            visit(child, func, tc)

    visit(tree, False, False)
    return found


MODULES = _modules()


def _concept(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    concept = _concept(module)
    for layer, names in LAYERS.items():
        if concept in names:
            return layer
    raise AssertionError(f"{module}: add its concept {concept!r} to LAYERS in tests/test_architecture.py")


def test_every_module_has_a_layer():
    for module in MODULES:
        if module != "lpntk":
            _layer(module)


def test_no_lpntk_import_inside_a_function_body():
    hidden = [
        f"{m}:{line} imports {target}" for m, p in MODULES.items() for target, inside, line in _imports(m, p) if inside
    ]
    assert not hidden, "imports of lpntk modules inside function bodies:\n" + "\n".join(hidden)


def test_imports_run_one_way_down_the_layers():
    upward = []
    for m, p in MODULES.items():
        if m == "lpntk":  # the lazy public API re-exports from every layer on first use
            continue
        for target, _, line in _imports(m, p):
            if target != "lpntk" and _layer(target) > _layer(m):
                upward.append(f"{m}:{line} (layer {_layer(m)}) imports {target} (layer {_layer(target)})")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    graph = {m: {t for t, _, _ in _imports(m, p) if t in MODULES and t != m} for m, p in MODULES.items()}
    graph["lpntk"] = set()  # importing a submodule runs the package's __init__, which imports nothing eagerly
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def test_mlflow_is_imported_by_the_tracking_package_alone():
    offenders = []
    for m, p in MODULES.items():
        if m.startswith("lpntk.tracking"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                offenders.append(f"{m}:{node.lineno}")
    assert not offenders, offenders


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_load_neither_torch_nor_mlflow(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'mlflow', 'torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", f"importing {module} loads {out.stdout.strip()}"


def test_modules_are_short_or_say_why_not():
    long = []
    for m, p in MODULES.items():
        text = p.read_text()
        n = text.count("\n")
        if n > MAX_LINES and REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{m}: {n} lines")
    assert not long, f"modules over {MAX_LINES} lines without '{REASON} ...' in their docstring: {long}"


def test_the_public_api_is_unchanged():
    import lpntk

    before = {  # lpntk.__all__ before the lazy loading (every name keeps working)
        "lpntk_gram", "lpntk_features", "pntk_gram", "entk_blocks", "gradient_gram", "per_sample_gradients",
        "per_sample_grad_norms", "sign_vectors", "loss_gradient", "jvp_logits", "first_order_logit_change",
        "logit_loss_gradient", "exact_matmul", "relation_shares", "redundant_mask", "cosine", "select_sets",
        "target_l2_curves", "predicted_logit_changes", "forgetting_events", "predicted_forgetting", "run_forgetting",
        "score_table", "farthest_point_clustering", "select_heads", "select_top", "remove_small_clusters",
        "relations", "difficulty", "forgetting", "scores", "clustering", "pruning", "build_model", "count_parameters",
        "Split", "PreparedData", "DataNotFoundError", "prepare_dataset", "load_prepared", "Recipe", "TrainResult",
        "train_model", "seed_everything", "presentation_forgetting",
    }  # fmt: skip
    assert before <= set(lpntk.__all__)
    for name in lpntk.__all__:
        assert getattr(lpntk, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lpntk.nope  # noqa: B018
