"""Deploy a synthesized cloud assembly into the emulated account, as `cdk deploy` would."""

from __future__ import annotations

import io
import json
import logging
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cloud_sniper.local.api import local_outputs

logger = logging.getLogger(__name__)

STACK_TYPE = "aws:cloudformation:stack"

# moto's SQS event source mapping hands messages to its own Lambda, which runs no code, and
# drops them; moto's EventBridge cannot invoke a Lambda target and fails every event on the bus
# of such a rule. The local runtime delivers both itself (runtime.py): these stay out of moto.
RUNTIME_EMULATED = frozenset({"AWS::Lambda::EventSourceMapping"})


def is_runtime_emulated(resource: dict[str, Any]) -> bool:
    """Whether the local runtime, not the emulated CloudFormation, runs this resource."""
    if resource["Type"] in RUNTIME_EMULATED:
        return True
    properties = resource.get("Properties", {})
    return resource["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in properties


ASSET_MANIFEST_TYPE = "cdk:asset-manifest"

# Stacks of the app left out on purpose. The member role stack (stacks/config.py
# MEMBER_ROLE_STACK) goes to the member accounts, never to the administrator's: the emulated
# account is the administrator's alone, whose findings mitigate acts on with its own role.
NOT_DEPLOYED_LOCALLY = frozenset({"CloudSniper-MemberRole"})


class DeployError(RuntimeError):
    """The cloud assembly could not be deployed into the emulated account."""


@dataclass
class DeployedStack:
    name: str
    template: dict[str, Any]
    created_by_hand: list[str] = field(default_factory=list)
    not_emulated: list[str] = field(default_factory=list)
    # What the emulated CloudFormation made of each resource: an API's id, a function's name.
    physical_ids: dict[str, str] = field(default_factory=dict)


@dataclass
class DeployedApp:
    stacks: list[DeployedStack]

    def resources(self, resource_type: str) -> list[tuple[str, dict[str, Any]]]:
        """Every resource of one type across the stacks, as (logical id, definition)."""
        return [
            (logical_id, resource)
            for stack in self.stacks
            for logical_id, resource in stack.template.get("Resources", {}).items()
            if resource.get("Type") == resource_type
        ]


def stack_order(manifest: dict[str, Any]) -> list[str]:
    """The stacks of an assembly in an order that deploys each after what it depends on."""
    artifacts = manifest.get("artifacts", {})
    stacks = {name for name, artifact in artifacts.items() if artifact["type"] == STACK_TYPE}
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered or name not in stacks:
            return
        if name in path:
            raise DeployError(f"stack dependency cycle: {' -> '.join((*path, name))}")
        for dependency in artifacts[name].get("dependencies", []):
            visit(dependency, (*path, name))
        ordered.append(name)

    for name in sorted(stacks):
        visit(name, ())
    return ordered


def deploy_assembly(
    assembly: Path, clients: Any, account: str, region: str, api_base_url: str | None = None
) -> DeployedApp:
    """Upload the assets and create every stack of the assembly in the emulated account.

    `clients(service)` returns a boto3 client bound to the emulated account. With an API base
    URL, the stacks' outputs of REST API URLs point there, where the local runtime serves them.
    """
    manifest = json.loads((assembly / "manifest.json").read_text())
    # What the emulation skips is reported in DeployedStack.not_emulated, once, not as warnings.
    logging.getLogger("moto").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Tried to parse", category=UserWarning)
    _upload_assets(assembly, manifest, clients, account, region)

    deployed = []
    for name in stack_order(manifest):
        artifact = manifest["artifacts"][name]
        stack_name = artifact.get("displayName", name).split("/")[-1]
        if stack_name in NOT_DEPLOYED_LOCALLY:
            logger.info("not deployed locally: %s", stack_name)
            continue
        template_file = artifact["properties"]["templateFile"]
        template = json.loads((assembly / template_file).read_text())
        deployed.append(_create_stack(clients, stack_name, template, api_base_url))
    return DeployedApp(deployed)


def _upload_assets(
    assembly: Path, manifest: dict[str, Any], clients: Any, account: str, region: str
) -> None:
    s3 = clients("s3")
    buckets: set[str] = set()
    packed: dict[Path, bytes] = {}
    for artifact in manifest.get("artifacts", {}).values():
        if artifact["type"] != ASSET_MANIFEST_TYPE:
            continue
        assets = json.loads((assembly / artifact["properties"]["file"]).read_text())
        for asset in assets.get("files", {}).values():
            # Each stack names the shared layer's asset again: it is packed once.
            path = assembly / asset["source"]["path"]
            if path not in packed:
                packed[path] = _asset_bytes(path, asset["source"].get("packaging"))
            body = packed[path]
            for destination in asset["destinations"].values():
                bucket = _substitute(destination["bucketName"], account, region)
                if bucket not in buckets:
                    _ensure_bucket(s3, bucket, region)
                    buckets.add(bucket)
                s3.put_object(Bucket=bucket, Key=destination["objectKey"], Body=body)


def _asset_bytes(path: Path, packaging: str | None) -> bytes:
    if packaging == "zip" or path.is_dir():
        buffer = io.BytesIO()
        # Stored, not deflated: the emulated bucket keeps it in memory and nothing downloads it,
        # and compressing the layer cost seconds at every start.
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for file in sorted(path.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(path).as_posix())
        return buffer.getvalue()
    return path.read_bytes()


def _substitute(text: str, account: str, region: str) -> str:
    return (
        text.replace("${AWS::AccountId}", account)
        .replace("${AWS::Region}", region)
        .replace("${AWS::Partition}", "aws")
    )


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
            )
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def _create_stack(
    clients: Any, stack_name: str, template: dict[str, Any], api_base_url: str | None = None
) -> DeployedStack:
    """Create one stack; resources the emulation skips are created from the template by hand."""
    template = _without_bootstrap_check(template)
    deployed = DeployedStack(stack_name, template)
    template = _without_runtime_emulated(template)
    if api_base_url is not None:
        template = local_outputs(template, api_base_url)
    template, created_by_hand = _create_by_hand(clients, template)
    deployed.created_by_hand = created_by_hand

    cloudformation = clients("cloudformation")
    try:
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(template),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
    except ClientError as exc:
        raise DeployError(f"stack {stack_name}: {exc.response['Error']['Message']}") from exc

    status = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
    if status != "CREATE_COMPLETE":
        raise DeployError(f"stack {stack_name}: ended in {status}")

    summaries = cloudformation.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    for summary in summaries:
        if summary["ResourceType"] == "AWS::StepFunctions::StateMachine":
            _publish_state_machine(clients, summary["PhysicalResourceId"])
    created = {summary["LogicalResourceId"] for summary in summaries}
    deployed.physical_ids = {
        summary["LogicalResourceId"]: summary["PhysicalResourceId"] for summary in summaries
    }
    for logical_id, resource in template.get("Resources", {}).items():
        if logical_id not in created:
            deployed.not_emulated.append(f"{logical_id} ({resource['Type']})")
    return deployed


def _without_runtime_emulated(template: dict[str, Any]) -> dict[str, Any]:
    """Leave out what the local runtime runs itself, and what only serves those resources
    (a scheduled rule's permission to invoke its function, for example)."""
    resources = dict(template.get("Resources", {}))
    removed = {key for key, resource in resources.items() if is_runtime_emulated(resource)}
    while removed:
        for logical_id in removed:
            resources.pop(logical_id)
        removed = {
            key for key, resource in resources.items() if _references(resource) & set(removed)
        }
    return {**template, "Resources": resources}


def _references(node: Any) -> set[str]:
    """The logical ids a piece of template refers to (Ref, Fn::GetAtt, DependsOn)."""
    if isinstance(node, list):
        return set().union(*(_references(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found: set[str] = set()
    if isinstance(node.get("Ref"), str):
        found.add(node["Ref"])
    if isinstance(node.get("Fn::GetAtt"), list):
        found.add(node["Fn::GetAtt"][0])
    depends = node.get("DependsOn")
    if depends:
        found.update([depends] if isinstance(depends, str) else depends)
    return found.union(*(_references(value) for value in node.values()))


def _create_by_hand(clients: Any, template: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Create the resources the emulated CloudFormation skips, and put their values in the template.

    References to them (Ref, Fn::GetAtt) are replaced by what the created resource returned, so
    the rest of the stack deploys as it would in AWS.
    """
    resources = dict(template.get("Resources", {}))
    values: dict[str, dict[str, str]] = {}
    created = []
    for logical_id, resource in list(resources.items()):
        maker = _BY_HAND.get(resource["Type"])
        if maker is None:
            continue
        values[logical_id] = maker(clients, resource.get("Properties", {}))
        created.append(f"{logical_id} ({resource['Type']})")
        del resources[logical_id]
    if not values:
        return template, created
    resolved = _replace_references({**template, "Resources": resources}, values)
    return resolved, created


def _replace_references(node: Any, values: dict[str, dict[str, str]]) -> Any:
    if isinstance(node, list):
        return [_replace_references(item, values) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"} and node["Ref"] in values:
        return values[node["Ref"]]["Ref"]
    if set(node) == {"Fn::GetAtt"} and node["Fn::GetAtt"][0] in values:
        logical_id, attribute = node["Fn::GetAtt"][0], node["Fn::GetAtt"][1]
        return values[logical_id][attribute]
    if "DependsOn" in node and isinstance(node["DependsOn"], list):
        node = {**node, "DependsOn": [d for d in node["DependsOn"] if d not in values]}
    elif node.get("DependsOn") in values:
        node = {key: value for key, value in node.items() if key != "DependsOn"}
    return {key: _replace_references(value, values) for key, value in node.items()}


def _publish_state_machine(clients: Any, arn: str) -> None:
    """Make a state machine that CloudFormation created runnable by the Step Functions API.

    moto keeps two Step Functions backends: CloudFormation writes to the plain one, while the
    API (set to execute Amazon States Language) reads the executing one. The definition, with
    its references resolved by CloudFormation, is copied from the first into the second.
    """
    from moto.stepfunctions.models import stepfunctions_backends

    _, _, _, region, account, _, _ = arn.split(":", 6)
    created = stepfunctions_backends[account][region].describe_state_machine(arn)
    clients("stepfunctions").create_state_machine(
        name=created.name,
        definition=created.definition,
        roleArn=created.roleArn,
        type=getattr(created, "type", None) or "STANDARD",
    )


def _without_bootstrap_check(template: dict[str, Any]) -> dict[str, Any]:
    """Drop the bootstrap-version rule: the emulated account has no CDK bootstrap stack."""
    template = dict(template)
    template.pop("Rules", None)
    parameters = dict(template.get("Parameters", {}))
    parameters.pop("BootstrapVersion", None)
    if parameters:
        template["Parameters"] = parameters
    else:
        template.pop("Parameters", None)
    return template


def _create_ip_set(clients: Any, properties: dict[str, Any]) -> dict[str, str]:
    wafv2 = clients("wafv2")
    existing = wafv2.list_ip_sets(Scope=properties["Scope"])["IPSets"]
    summary = next((s for s in existing if s["Name"] == properties["Name"]), None)
    if summary is None:
        summary = wafv2.create_ip_set(
            Name=properties["Name"],
            Scope=properties["Scope"],
            IPAddressVersion=properties["IPAddressVersion"],
            Addresses=properties.get("Addresses", []),
            Description=properties.get("Description", ""),
        )["Summary"]
    reference = f"{summary['Name']}|{summary['Id']}|{properties['Scope']}"
    return {"Ref": reference, "Arn": summary["ARN"], "Id": summary["Id"]}


def _create_group(clients: Any, properties: dict[str, Any]) -> dict[str, str]:
    iam = clients("iam")
    name, path = properties["GroupName"], properties.get("Path", "/")
    try:
        group = iam.create_group(GroupName=name, Path=path)["Group"]
    except iam.exceptions.EntityAlreadyExistsException:
        group = iam.get_group(GroupName=name)["Group"]
    return {"Ref": group["GroupName"], "Arn": group["Arn"]}


def _create_work_group(clients: Any, properties: dict[str, Any]) -> dict[str, str]:
    # By name only: its result configuration refers to a bucket of the stack not yet created,
    # and the emulated Athena runs no query anyway (a test gives it the answers).
    athena = clients("athena")
    name = properties["Name"]
    if not any(group["Name"] == name for group in athena.list_work_groups()["WorkGroups"]):
        athena.create_work_group(Name=name, Description=properties.get("Description", ""))
    return {"Ref": name}


# Resource types the emulation's CloudFormation skips and that matter to the pipeline.
_BY_HAND = {
    "AWS::WAFv2::IPSet": _create_ip_set,
    "AWS::IAM::Group": _create_group,
    "AWS::Athena::WorkGroup": _create_work_group,
}
