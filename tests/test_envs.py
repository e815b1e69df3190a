"""Per-rule conda envs: every env file parses and pins its packages, and for every rule the third-party
modules its script imports (following imports into `pddpm`, transitively) are in that rule's env.

conda channels are unreachable here, so this is the check that `--sdm conda` on a cluster would not
fail with an ImportError. The rules, their scripts and envs come from the workflow itself (snakemake's
API on the tiny config): a rule added tomorrow is checked without editing this file.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from workflow_utils import REPO, TINY_CONFIG

ENVS = sorted((REPO / "envs").glob("*.yaml"))
# Import name -> conda/PyPI package name where they differ (the rest: lower case, "_" -> "-").
PACKAGE_OF = {
    "SimpleITK": "simpleitk",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "ants": "antspyx",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "torch": "torch",
    "HD_BET": "hd-bet",
    "brainles_hd_bet": "brainles-hd-bet",
    "cv2": "opencv",
    "nnunetv2": "nnunetv2",
}
# Where a package goes by another name on conda-forge than on PyPI.
ALIASES = {"pytorch": "torch"}
# Provided by snakemake itself to every script it runs (it puts its own package on the path).
PROVIDED_BY_SNAKEMAKE = {"snakemake"}
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(==?)\s*([0-9][A-Za-z0-9_.+\-*]*)$")

LOADER = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                      ResourceSettings)
repo = Path(sys.argv[1])
rules = {}
for cfg in map(Path, sys.argv[2:]):
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        wf = api.workflow(resource_settings=ResourceSettings(),
                          config_settings=ConfigSettings(configfiles=[cfg.resolve()]),
                          snakefile=repo / "Snakefile", workdir=cfg.parent.resolve())
        wf.dag(DAGSettings(forceall=True))
        w = wf._workflow
        for r in w.rules:
            static = r.conda_env if isinstance(r.conda_env, str) else None
            rules.setdefault(r.name, {
                "script": str((Path(r.basedir) / r.script).resolve()) if r.script else None,
                "envs": [str((Path(r.basedir) / static).resolve())] if static else [],
                "dynamic_env": r.conda_env is not None and static is None,
                "shell": r.shellcmd is not None,
            })
        # Envs given as functions of the wildcards: resolve them on the jobs of this config's DAG.
        w._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        w._build_dag()
        for job in w.dag.jobs:
            spec = job.conda_env_spec
            info = rules[job.rule.name]
            if spec is not None and info["dynamic_env"]:
                path = str(Path(spec.file.get_path_or_uri(secret_free=True)).resolve())
                if path not in info["envs"]:
                    info["envs"].append(path)
print("RULES_JSON=" + json.dumps(rules))
"""


def config_variants() -> list[dict]:
    """The tiny config once per skull-stripping backend the schema allows: the one config choice that
    switches a rule's env (HD-BET v2 has its own)."""
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    backends = schema["properties"]["preprocess"]["properties"]["skullstrip"]["properties"]["backend"]["enum"]
    base = yaml.safe_load(TINY_CONFIG.read_text())
    variants = []
    for backend in backends:
        cfg = yaml.safe_load(yaml.safe_dump(base))
        cfg.setdefault("preprocess", {}).setdefault("skullstrip", {})["backend"] = backend
        variants.append(cfg)
    return variants


@cache
def workflow_rules() -> dict[str, dict]:
    """rule -> {script, envs, dynamic_env, shell}, from the workflow parsed on the tiny config(s)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, cfg in enumerate(config_variants()):
            (Path(tmp) / str(i)).mkdir()
            paths.append(Path(tmp) / str(i) / "config.yaml")
            paths[-1].write_text(yaml.safe_dump(cfg, sort_keys=False))
        proc = subprocess.run([sys.executable, "-c", LOADER, str(REPO), *map(str, paths)],
                              capture_output=True, text=True, timeout=300, cwd=tmp)
    for line in proc.stdout.splitlines():
        if line.startswith("RULES_JSON="):
            return json.loads(line.removeprefix("RULES_JSON="))
    raise AssertionError(f"could not load the workflow:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def env_packages(path: Path) -> dict[str, str]:
    """package name -> pinned version; raises AssertionError naming the entry that is not pinned."""
    spec = yaml.safe_load(path.read_text())
    assert isinstance(spec, dict) and isinstance(spec.get("dependencies"), list), \
        f"{path.name}: needs a `dependencies:` list"
    pins: dict[str, str] = {}
    for dep in spec["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) and "pip" in dep else [dep]
        pip = isinstance(dep, dict)
        for entry in entries:
            assert isinstance(entry, str), f"{path.name}: unexpected entry {entry!r}"
            if entry.strip() == "pip" and not pip:
                continue  # the installer of the pip: section itself
            m = PIN.match(entry.strip())
            assert m, f"{path.name}: `{entry}` is not pinned (write name={'=' if pip else ''}version)"
            assert not pip or m.group(2) == "==", f"{path.name}: pip entry `{entry}` needs =="
            name = m.group(1).lower().replace("_", "-")
            pins[ALIASES.get(name, name)] = m.group(3)
    return pins


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """An import inside `try: ... except ImportError` (optional) or `if TYPE_CHECKING:`."""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.Try) and node in parent.body:
            for h in parent.handlers:
                names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
                       for n in names):
                    return True
        if isinstance(parent, ast.If) and "TYPE_CHECKING" in ast.unparse(parent.test):
            return True
        node = parent
    return False


def _module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _in_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return True
    return False


def imports_of(path: Path, module: str | None = None) -> list[str]:
    """Absolute module names imported by a file (relative imports resolved against `module`).

    In a rule's script every import counts (the script runs top to bottom). In `pddpm` modules only the
    imports that run when the module is imported count: an import inside a function is the lazy,
    backend-specific kind (HD-BET only when that backend is chosen), which a static scan cannot tie to
    a rule."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = (module if path.name == "__init__.py" else module.rpartition(".")[0]) if module else ""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or _guarded(node, parents):
            continue
        if module and _in_function(node, parents):
            continue
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(p for p in [*parts, base] if p)
        found.append(base)
        # `from pddpm import io` imports the submodule pddpm.io
        found += [f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")]
    return found


def third_party_imports(script: Path) -> dict[str, list[str]]:
    """Top-level third-party module -> the files (script or pddpm modules) that import it."""
    seen: set[str] = set()
    todo: list[tuple[Path, str | None]] = [(script, None)]
    out: dict[str, list[str]] = {}
    while todo:
        path, mod = todo.pop()
        for name in imports_of(path, mod):
            top = name.split(".")[0]
            if top == "pddpm":
                # importing pddpm.a.b runs pddpm/__init__, pddpm/a/__init__ and pddpm/a/b
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    sub = ".".join(parts[:i])
                    file = _module_file(sub)
                    if file and sub not in seen:
                        seen.add(sub)
                        todo.append((file, sub))
            elif top and top not in sys.stdlib_module_names and top not in PROVIDED_BY_SNAKEMAKE:
                out.setdefault(top, []).append(str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path))
    return out


def package_of(module: str) -> str:
    return PACKAGE_OF.get(module, module.lower().replace("_", "-"))


@pytest.mark.parametrize("env", ENVS, ids=[e.name for e in ENVS])
def test_env_file_parses_and_pins(env):
    pins = env_packages(env)
    assert "python" in pins, f"{env.name}: pin python"
    assert len(pins) > 1


def test_every_rule_has_an_existing_env():
    rules = workflow_rules()
    assert rules, "no rules found"
    missing = {}
    for name, info in rules.items():
        if name == "all" or not (info["script"] or info["shell"]):
            continue
        if not info["envs"]:
            missing[name] = "no conda: directive (or its function gave none on the tiny run)"
        for env in info["envs"]:
            if not Path(env).is_file():
                missing[name] = f"conda env {env} does not exist"
    assert not missing, missing


def test_rule_envs_provide_what_their_scripts_import():
    rules = workflow_rules()
    problems = []
    checked = 0
    for name, info in sorted(rules.items()):
        if not info["script"]:
            continue
        script = Path(info["script"])
        assert script.is_file(), f"rule {name}: script {script} missing"
        needed = third_party_imports(script)
        for env in info["envs"]:
            if not Path(env).is_file():
                continue  # reported by test_every_rule_has_an_existing_env
            provided = set(env_packages(Path(env)))
            for module, where in sorted(needed.items()):
                if package_of(module) not in provided:
                    problems.append(f"rule {name} ({Path(env).name}): `{module}` (package "
                                    f"{package_of(module)}) imported by {sorted(set(where))}")
            checked += 1
    assert checked, "no rule with a script and an env"
    assert not problems, "envs lack packages their rules import:\n" + "\n".join(problems)


def test_import_scan_follows_pddpm_transitively(tmp_path):
    """The scanner itself: a script importing pddpm.io sees nibabel through pddpm/io.py."""
    script = tmp_path / "s.py"
    script.write_text("import os\nfrom pddpm.io import save_nifti\ntry:\n    import HD_BET\n"
                      "except ImportError:\n    pass\ndef f():\n    import scipy\n")
    found = third_party_imports(script)
    assert "nibabel" in found and any("pddpm/io.py" in w for w in found["nibabel"])
    assert "scipy" in found  # the script's own lazy import counts
    assert "os" not in found and "HD_BET" not in found
