"""Staging the Lambda bundles and the dependencies layer without Docker."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import FileSystem

from cloud_sniper import build
from stacks.config import FUNCTIONS

POLICY = build.ROOT / "cloud_sniper/data/default-policy.yaml"
# What a Lambda function may import besides its bundle, the standard library and the layer.
LAMBDA_RUNTIME_MODULES = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3"}


@pytest.fixture
def project(tmp_path) -> Path:
    """A small project tree shaped like the repository."""
    root = tmp_path / "project"
    files = {
        "cloud_sniper/__init__.py": '"""Package."""\n',
        "cloud_sniper/cli.py": "print('not shipped')\n",
        "cloud_sniper/local/runtime.py": "print('not shipped')\n",
        "cloud_sniper/domain/__init__.py": "",
        "cloud_sniper/domain/models.py": "MODEL = 1\n",
        "cloud_sniper/data/types.tsv": "type\tseverity\n",
        "services/__init__.py": "",
        "services/report/__init__.py": "",
        "services/report/handler.py": "def report(event, context):\n    return event\n",
        "services/report/adapters/__init__.py": "",
        "services/decide/__init__.py": "",
    }
    # The modules another service's bundle ships beside its own.
    for modules in build.SERVICE_MODULES.values():
        files.update({relative: files.get(relative, "") for relative in modules})
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    (root / "services/report/__pycache__").mkdir()
    (root / "services/report/__pycache__/handler.cpython-312.pyc").write_bytes(b"\0")
    (root / "cloud_sniper/domain/models.pyc").write_bytes(b"\0")
    return root


def bundle_files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def test_bundle_holds_the_domain_the_data_and_its_own_service_only(project, tmp_path):
    # When the report bundle is staged
    bundle = build.stage_service("report", build_dir=tmp_path / "build", root=project)

    # Then it has the package roots, the domain, the data and services/report, no bytecode
    assert bundle == tmp_path / "build/lambda/report"
    assert bundle_files(bundle) == {
        "cloud_sniper/__init__.py",
        "cloud_sniper/domain/__init__.py",
        "cloud_sniper/domain/models.py",
        "cloud_sniper/data/types.tsv",
        "services/__init__.py",
        "services/report/__init__.py",
        "services/report/handler.py",
        "services/report/adapters/__init__.py",
        # What the fixture made of the report modules another bundle ships too
        *(
            relative
            for modules in build.SERVICE_MODULES.values()
            for relative in modules
            if relative.startswith("services/report/")
        ),
    }


def test_restaging_unchanged_sources_keeps_files_and_asset_hash(project, tmp_path):
    # Given a staged bundle and its CDK asset fingerprint
    bundle = build.stage_service("report", build_dir=tmp_path / "build", root=project)
    before = FileSystem.fingerprint(str(bundle))
    mtimes = {p: p.stat().st_mtime_ns for p in bundle.rglob("*") if p.is_file()}

    # When it is staged again with nothing changed
    build.stage_service("report", build_dir=tmp_path / "build", root=project)

    # Then no file was rewritten and the asset hash is the same
    assert {p: p.stat().st_mtime_ns for p in bundle.rglob("*") if p.is_file()} == mtimes
    assert FileSystem.fingerprint(str(bundle)) == before


def test_restaging_follows_changes_and_drops_removed_files(project, tmp_path):
    bundle = build.stage_service("report", build_dir=tmp_path / "build", root=project)
    before = FileSystem.fingerprint(str(bundle))

    # When a module changes and another is removed from the sources
    (project / "services/report/handler.py").write_text("def report(event, context):\n    pass\n")
    (project / "services/report/adapters/__init__.py").unlink()
    (project / "services/report/adapters").rmdir()
    build.stage_service("report", build_dir=tmp_path / "build", root=project)

    # Then the bundle has the change, not the removed file, and a new hash
    assert "pass" in (bundle / "services/report/handler.py").read_text()
    assert not (bundle / "services/report/adapters").exists()
    assert FileSystem.fingerprint(str(bundle)) != before


def test_decide_bundle_ships_the_policy_compiled_to_json(project, tmp_path):
    # When the decide bundle is staged with the default policy
    bundle = build.stage_service(
        "decide", policy=POLICY, build_dir=tmp_path / "build", root=project
    )

    # Then it holds cloud_sniper/data/policy.json, the policy validated and written as JSON
    policy = json.loads((bundle / "cloud_sniper/data/policy.json").read_text())
    assert policy["version"] == 1
    assert any(rule["mode"] == "approval" for rule in policy["rules"])


def test_a_missing_service_is_an_error(project, tmp_path):
    with pytest.raises(build.BuildError, match="no service package"):
        build.stage_service("nothing", build_dir=tmp_path / "build", root=project)


def test_layer_is_reused_while_its_requirements_are_the_same(tmp_path, monkeypatch):
    # Given a layer already built for these requirements
    requirements = ["example-distribution==1.0"]
    digest = build.layer_hash(requirements)
    (tmp_path / "layer/python").mkdir(parents=True)
    (tmp_path / "layer/requirements.sha256").write_text(digest)

    # When it is staged again, Then pip is not run
    def no_pip(*args, **kwargs):
        raise AssertionError("pip ran")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert build.stage_layer(requirements, build_dir=tmp_path) == (tmp_path / "layer", digest)


def test_layer_hash_follows_the_requirements():
    assert build.layer_hash(["a==1", "b==2"]) == build.layer_hash(["b==2", "a==1"])
    assert build.layer_hash(["a==1"]) != build.layer_hash(["a==2"])


def test_layer_requirements_are_pinned_to_this_environment():
    from importlib import metadata

    assert build.layer_requirements() == [
        f"aws-lambda-powertools=={metadata.version('aws-lambda-powertools')}",
        f"pydantic=={metadata.version('pydantic')}",
        f"jinja2=={metadata.version('jinja2')}",
        f"pygal=={metadata.version('pygal')}",
        f"thehive4py=={metadata.version('thehive4py')}",
        f"numpy=={metadata.version('numpy')}",
    ]


def test_a_failed_pip_is_a_clear_error_and_leaves_no_layer(tmp_path, monkeypatch):
    # Given pip with no index to read from (offline, and fast)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")

    # When the layer is built, Then the error names what was asked and pip's own words
    with pytest.raises(build.BuildError) as error:
        build.stage_layer(["cloud-sniper-no-such-distribution==0.0"], build_dir=tmp_path)
    message = str(error.value)
    assert "cloud-sniper-no-such-distribution==0.0" in message
    assert "manylinux2014_x86_64" in message
    assert "pip said:" in message
    assert not (tmp_path / "layer").exists()


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    # Imports inside functions are lazy on purpose (pyyaml at build time only): not checked.
    kept = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            kept.append(node)
        elif isinstance(node, ast.Try):
            kept.extend(_module_level(node.body))
    return kept


@pytest.mark.parametrize("service", sorted({spec.service for spec in FUNCTIONS.values()}))
def test_bundle_imports_only_what_lambda_will_have(assembly, service):
    # Given the bundle and the layer the synth staged
    bundle = build.BUILD_DIR / "lambda" / service
    layer = {p.name.removesuffix(".py") for p in (build.BUILD_DIR / "layer/python").iterdir()}
    available = set(sys.stdlib_module_names) | LAMBDA_RUNTIME_MODULES | layer

    # Then every import made when a module loads is in the bundle, the runtime or the layer
    for path in sorted(bundle.rglob("*.py")):
        relative = path.relative_to(bundle)
        for name in module_level_imports(bundle, relative):
            top = name.split(".")[0]
            if top in ("cloud_sniper", "services"):
                assert in_bundle(bundle, name), f"{relative} imports {name}, not in the bundle"
            else:
                assert top in available, f"{relative} imports {top}, not in Lambda"


def module_level_imports(bundle: Path, relative: Path) -> set[str]:
    """Modules a file imports when it loads: module level, outside `if TYPE_CHECKING`."""
    tree = ast.parse((bundle / relative).read_text(), filename=str(relative))
    package = list(relative.parts[:-1])
    names = set()
    for node in _module_level(tree.body):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            module = node.module or ""
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def in_bundle(bundle: Path, name: str) -> bool:
    """Whether "a.b.c" is a module or package of the bundle, or a name defined in "a.b"."""
    parts = name.split(".")
    if _is_module(bundle, parts):
        return True
    # A module of the repository left out of the bundle is an import error in Lambda.
    return not _is_module(build.ROOT, parts) and _is_module(bundle, parts[:-1])


def _is_module(root: Path, parts: list[str]) -> bool:
    candidate = root.joinpath(*parts)
    return candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file()
