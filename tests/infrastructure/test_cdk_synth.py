"""In-process synthesis and its cache."""

from __future__ import annotations

import pytest

from cloud_sniper import synth


def test_fingerprint_follows_the_context_and_the_environment(monkeypatch):
    monkeypatch.delenv("CDK_DEFAULT_ACCOUNT", raising=False)
    base = synth.fingerprint(synth.app_context())

    assert synth.fingerprint(synth.app_context()) == base
    assert synth.fingerprint(synth.app_context({"nacl_rule_range": "10-20"})) != base
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "111122223333")
    assert synth.fingerprint(synth.app_context()) != base


def test_app_context_is_cdk_json_overridden_by_the_caller():
    context = synth.app_context({"log_level": "DEBUG"})

    assert context["log_level"] == "DEBUG"
    assert context["nacl_rule_range"] == "50-99"
    assert context["@aws-cdk/core:checkSecretUsage"] is True


def test_unchanged_inputs_reuse_the_assembly(assembly, monkeypatch):
    # Given the assembly the session synthesized
    def no_synth(*args, **kwargs):
        raise AssertionError("synthesized again")

    monkeypatch.setattr(synth, "_run_app", no_synth)
    monkeypatch.delenv("CDK_DEFAULT_ACCOUNT", raising=False)
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)

    # When it is asked for again with nothing changed, Then it is returned as is
    assert synth.synthesize(assembly.directory) == assembly.directory


def test_a_failed_synth_leaves_the_previous_assembly(tmp_path, monkeypatch):
    # Given an earlier assembly in the output directory
    outdir = tmp_path / "cdk.out"
    outdir.mkdir()
    (outdir / "manifest.json").write_text("{}")

    def failing(directory, context):
        (directory / "partial.json").write_text("{}")
        raise RuntimeError("ValidationFailed")

    monkeypatch.setattr(synth, "_run_app", failing)

    # When a synth fails, Then the error surfaces and the earlier assembly is untouched
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        synth.synthesize(outdir)
    assert sorted(p.name for p in outdir.iterdir()) == ["manifest.json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cdk.out-")] == []
