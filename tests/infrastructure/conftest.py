"""Synthesize the CDK app once per test session; the infrastructure tests read its templates."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from cloud_sniper import synth

# jsii starts Node when aws_cdk is first imported, which the test modules here do.
synth.use_venv_node()


class Assembly:
    """The synthesized app, read as CloudFormation: templates, resources and their names."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        manifest = json.loads((directory / "manifest.json").read_text())
        self.stack_ids = sorted(
            name
            for name, artifact in manifest["artifacts"].items()
            if artifact["type"] == "aws:cloudformation:stack"
        )
        self.templates = {
            stack: json.loads((directory / f"{stack}.template.json").read_text())
            for stack in self.stack_ids
        }

    @cached_property
    def assertions(self) -> dict[str, Any]:
        """aws_cdk.assertions.Template of each stack, by stack id."""
        from aws_cdk.assertions import Template

        return {stack: Template.from_json(body) for stack, body in self.templates.items()}

    def resources(self, stack: str, resource_type: str) -> dict[str, dict]:
        """The resources of one type in a stack, by logical id."""
        resources = self.templates[stack]["Resources"]
        return {key: r for key, r in resources.items() if r["Type"] == resource_type}

    def one(self, stack: str, resource_type: str, **properties: Any) -> tuple[str, dict]:
        """The single resource of a type whose properties include the given ones."""
        found = [
            (key, resource)
            for key, resource in self.resources(stack, resource_type).items()
            if all(resource["Properties"].get(k) == v for k, v in properties.items())
        ]
        assert len(found) == 1, f"{stack}: {len(found)} {resource_type} with {properties}"
        return found[0]

    def render(self, stack: str, value: Any) -> Any:
        """Write intrinsic functions as readable strings.

        Pseudo parameters become <AWS::Region>; a reference to a resource of the stack becomes
        its type and name, e.g. <AWS::SQS::Queue cloud-sniper-intake.Arn>, so tests do not
        depend on logical ids.
        """
        if isinstance(value, list):
            return [self.render(stack, item) for item in value]
        if not isinstance(value, dict):
            return value
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(str(self.render(stack, part)) for part in parts)
        if "Ref" in value:
            return self._named(stack, value["Ref"], None)
        if "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            return self._named(stack, logical_id, attribute)
        return {key: self.render(stack, item) for key, item in value.items()}

    def _named(self, stack: str, logical_id: str, attribute: str | None) -> str:
        resource = self.templates[stack]["Resources"].get(logical_id)
        if resource is None:  # a pseudo parameter or a template parameter
            return f"<{logical_id}>"
        properties = resource.get("Properties", {})
        name = next(
            (properties[key] for key in _NAME_PROPERTIES if isinstance(properties.get(key), str)),
            logical_id,
        )
        suffix = f".{attribute}" if attribute else ""
        return f"<{resource['Type']} {name}{suffix}>"

    def definition(self) -> dict:
        """The pipeline state machine's definition, parsed."""
        from stacks.config import PIPELINE_STACK

        _, machine = self.one(PIPELINE_STACK, "AWS::StepFunctions::StateMachine")
        return json.loads(self.render(PIPELINE_STACK, machine["Properties"]["DefinitionString"]))

    def function(self, function_name: str) -> tuple[str, dict]:
        """The stack and the properties of a function, found by its name."""
        for stack in self.stack_ids:
            for resource in self.resources(stack, "AWS::Lambda::Function").values():
                if resource["Properties"]["FunctionName"] == function_name:
                    return stack, resource["Properties"]
        raise AssertionError(f"no function {function_name}")

    def statements(self, function_name: str) -> set[tuple[tuple[str, ...], tuple[str, ...]]]:
        """Every statement of the policies on a function's role, as (actions, resources)."""
        stack, properties = self.function(function_name)
        role_id = properties["Role"]["Fn::GetAtt"][0]
        found = set()
        for policy in self.resources(stack, "AWS::IAM::Policy").values():
            if {"Ref": role_id} not in policy["Properties"].get("Roles", []):
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Allow" and "Condition" not in statement
                found.add(
                    (
                        _as_tuple(statement["Action"]),
                        _as_tuple(self.render(stack, statement["Resource"])),
                    )
                )
        return found


_NAME_PROPERTIES = (
    "FunctionName",
    "QueueName",
    "TableName",
    "TopicName",
    "BucketName",
    "LogGroupName",
    "StateMachineName",
    "LayerName",
    "GroupName",
    "Name",
)


def _as_tuple(value: Any) -> tuple[str, ...]:
    return tuple(sorted(value if isinstance(value, list) else [value]))


@pytest.fixture(scope="session")
def assembly(assembly_dir: Path) -> Assembly:
    """The app synthesized once for the session (see tests/conftest.py), read as templates."""
    return Assembly(assembly_dir)


@pytest.fixture(scope="session")
def definition(assembly: Assembly) -> dict:
    return assembly.definition()
