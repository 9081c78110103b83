"""Stage the Lambda bundles and the dependencies layer on disk, without Docker."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / ".build"

# The Lambda platform the layer is built for; the functions' runtime and architecture match.
# Python 3.12 on Lambda runs on Amazon Linux 2023 (glibc 2.34): wheels for glibc 2.17
# (manylinux2014) and 2.28 both load there, and numpy ships only the latter since 2.3.
LAYER_PLATFORM = (("manylinux2014_x86_64", "manylinux_2_28_x86_64"), "cp", "3.12")
# boto3 is in the Lambda runtime; these are what the services import besides.
# jinja2 and pygal render the summary page and its charts (services/report/summary_render.py);
# numpy verifies the beacon scan's top pairs (cloud_sniper/beacons/verify.py).
LAYER_DISTRIBUTIONS = (
    "aws-lambda-powertools",
    "pydantic",
    "jinja2",
    "pygal",
    "thehive4py",
    "numpy",
)
POLICY_IN_BUNDLE = Path("cloud_sniper/data/policy.json")
# Modules a service ships beside the domain. The beacon scan scores in Lambda with the beacon
# analysis's models, scoring and verification, never its DuckDB engine or its generator.
SERVICE_MODULES = {
    # The approval request opens the incident's TheHive case with the report's own case code.
    "decide": (
        "services/report/__init__.py",
        "services/report/incident.py",
        "services/report/nist.py",
        "services/report/nist_playbook.py",
        "services/report/thehive.py",
        "services/report/thehive_adapter.py",
    ),
    "beacons": (
        "cloud_sniper/beacons/__init__.py",
        "cloud_sniper/beacons/analysis.py",
        "cloud_sniper/beacons/findings.py",
        "cloud_sniper/beacons/models.py",
        "cloud_sniper/beacons/scoring.py",
        "cloud_sniper/beacons/verify.py",
    ),
}

_SKIPPED_DIRS = {"__pycache__"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


class BuildError(RuntimeError):
    """A bundle or the layer could not be staged; the message says what to fix."""


def bundle_sources(service: str, root: Path = ROOT) -> dict[str, Path]:
    """Map each file a service's bundle holds, by its path in the bundle, to its source."""
    service_dir = root / "services" / service
    if not (service_dir / "__init__.py").is_file():
        raise BuildError(f"no service package at {service_dir}")

    files = {
        "cloud_sniper/__init__.py": root / "cloud_sniper/__init__.py",
        "services/__init__.py": root / "services/__init__.py",
    }
    for top in ("cloud_sniper/domain", "cloud_sniper/data", f"services/{service}"):
        for source in walk_sources(root / top):
            files[source.relative_to(root).as_posix()] = source
    for relative in SERVICE_MODULES.get(service, ()):
        if not (root / relative).is_file():
            raise BuildError(f"the {service} bundle ships {relative}, which does not exist")
        files[relative] = root / relative
    return files


def stage_service(
    service: str,
    policy: Path | None = None,
    build_dir: Path = BUILD_DIR,
    root: Path = ROOT,
) -> Path:
    """Stage `.build/lambda/<service>/`; with a policy, compile it to the bundle's policy.json.

    Only changed files are written and stale ones removed, so the CDK asset hash, computed
    from the contents, stays the same while nothing changed.
    """
    target = build_dir / "lambda" / service
    wanted: dict[str, bytes | Path] = dict(bundle_sources(service, root))
    if policy is not None:
        wanted[POLICY_IN_BUNDLE.as_posix()] = _compile_policy(policy).encode()

    for relative, content in sorted(wanted.items()):
        _write_if_changed(target / relative, content)
    _remove_stale(target, set(wanted))
    return target


def layer_requirements() -> list[str]:
    """The layer's requirements, pinned to the versions installed in this environment."""
    return [f"{name}=={metadata.version(name)}" for name in LAYER_DISTRIBUTIONS]


def layer_hash(requirements: Sequence[str]) -> str:
    """Name a layer build by what goes into it: the requirements and the target platform."""
    recipe = json.dumps({"requirements": sorted(requirements), "platform": LAYER_PLATFORM})
    return hashlib.sha256(recipe.encode()).hexdigest()


def stage_layer(
    requirements: Sequence[str] | None = None, build_dir: Path = BUILD_DIR
) -> tuple[Path, str]:
    """Build `.build/layer/` (a `python/` directory) with pip once per requirement list.

    Returns the layer directory and its hash, which serves as the CDK asset hash: hashing
    the installed files would cost more than the build check.
    """
    requirements = list(requirements or layer_requirements())
    digest = layer_hash(requirements)
    layer_dir = build_dir / "layer"
    stamp = layer_dir / "requirements.sha256"
    if stamp.is_file() and stamp.read_text() == digest and (layer_dir / "python").is_dir():
        return layer_dir, digest

    # Built aside then swapped in, so an interrupted pip never leaves half a layer behind.
    partial = build_dir / "layer.partial"
    shutil.rmtree(partial, ignore_errors=True)
    _pip_install(requirements, partial / "python")
    (partial / "requirements.sha256").write_text(digest)
    shutil.rmtree(layer_dir, ignore_errors=True)
    partial.rename(layer_dir)
    return layer_dir, digest


def _pip_install(requirements: list[str], target: Path) -> None:
    platforms, implementation, python_version = LAYER_PLATFORM
    platform = ", ".join(platforms)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        *(option for name in platforms for option in ("--platform", name)),
        "--implementation",
        implementation,
        "--python-version",
        python_version,
        "--only-binary=:all:",
        "--target",
        str(target),
        *requirements,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip().splitlines()
        raise BuildError(
            f"pip could not build the dependencies layer for {', '.join(requirements)} "
            f"({platform}, Python {python_version}); exit status {completed.returncode}. "
            "pip needs PyPI (or a mirror in pip's configuration) the first time on a machine. "
            "pip said:\n" + "\n".join(output[-15:])
        )


def _compile_policy(policy: Path) -> str:
    # Imported here: the policy module reads YAML only at build time, never in a Lambda.
    from cloud_sniper.domain.policy import policy_as_json

    return policy_as_json(policy)


def walk_sources(directory: Path) -> Iterator[Path]:
    """Every file under a directory in a stable order, without bytecode caches."""
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(files):
            if not name.endswith(_SKIPPED_SUFFIXES):
                yield Path(current) / name


def _write_if_changed(path: Path, content: bytes | Path) -> None:
    data = content.read_bytes() if isinstance(content, Path) else content
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Replaced whole: a synth hashing the bundle meanwhile never reads half a file.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def _remove_stale(target: Path, wanted: set[str]) -> None:
    for current, dirs, files in os.walk(target, topdown=False):
        for name in files:
            path = Path(current) / name
            if path.relative_to(target).as_posix() not in wanted:
                path.unlink()
        for name in dirs:
            path = Path(current) / name
            if not any(path.iterdir()):
                path.rmdir()
