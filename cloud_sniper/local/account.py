"""Seed the emulated account with a small demo estate: VPC, subnets, ACLs, WAF, instances."""

from __future__ import annotations

import json
from typing import Any

ESTATE_PARAMETER = "/cloud-sniper/local/estate"
DEMO_RULE_PRIORITY = 0


def seed_estate(clients: Any) -> dict[str, str]:
    """Create the demo estate and return its identifiers by role, also stored in SSM."""
    ec2 = clients("ec2")
    estate: dict[str, str] = {}

    vpc_id = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    _tag(ec2, vpc_id, "cloud-sniper-demo")
    estate["vpc"] = vpc_id
    for role, cidr in (("web_subnet", "10.20.1.0/24"), ("app_subnet", "10.20.2.0/24")):
        subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr)["Subnet"]["SubnetId"]
        _tag(ec2, subnet_id, role.replace("_", "-"))
        estate[role] = subnet_id
        estate[role.replace("subnet", "nacl")] = _own_network_acl(ec2, vpc_id, subnet_id, role)

    instances = (
        ("web_instance", "web_subnet", {"Name": "web-1", "env": "prod"}),
        ("app_instance", "app_subnet", {"Name": "app-1", "env": "prod"}),
        ("bastion_instance", "web_subnet", {"Name": "bastion", "cloud-sniper:exempt": "true"}),
    )
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    for role, subnet_role, tags in instances:
        instance = ec2.run_instances(
            ImageId=image_id,
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            SubnetId=estate[subnet_role],
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
                }
            ],
        )["Instances"][0]
        estate[role] = instance["InstanceId"]

    allocation = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(
        AllocationId=allocation["AllocationId"], InstanceId=estate["web_instance"]
    )
    estate["web_public_ip"] = allocation["PublicIp"]

    estate["web_acl"] = _web_acl(clients("wafv2"))
    clients("ssm").put_parameter(
        Name=ESTATE_PARAMETER, Value=json.dumps(estate), Type="String", Overwrite=True
    )
    return estate


def load_estate(clients: Any) -> dict[str, str]:
    """The demo estate's identifiers, as seeded."""
    value = clients("ssm").get_parameter(Name=ESTATE_PARAMETER)["Parameter"]["Value"]
    return json.loads(value)


def _tag(ec2: Any, resource_id: str, name: str) -> None:
    ec2.create_tags(Resources=[resource_id], Tags=[{"Key": "Name", "Value": name}])


def _own_network_acl(ec2: Any, vpc_id: str, subnet_id: str, role: str) -> str:
    """Give the subnet its own network ACL with the allow rules an account typically has at 100."""
    acl_id = ec2.create_network_acl(VpcId=vpc_id)["NetworkAcl"]["NetworkAclId"]
    _tag(ec2, acl_id, role.replace("_subnet", "-acl"))
    for egress in (False, True):
        ec2.create_network_acl_entry(
            NetworkAclId=acl_id,
            RuleNumber=100,
            Protocol="-1",
            RuleAction="allow",
            Egress=egress,
            CidrBlock="0.0.0.0/0",
        )
    acls = ec2.describe_network_acls(
        Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}]
    )
    for acl in acls["NetworkAcls"]:
        for association in acl["Associations"]:
            if association["SubnetId"] == subnet_id:
                ec2.replace_network_acl_association(
                    AssociationId=association["NetworkAclAssociationId"], NetworkAclId=acl_id
                )
    return acl_id


def _web_acl(wafv2: Any) -> str:
    """A regional web ACL whose first rule blocks the addresses in Cloud Sniper's IP sets."""
    ip_sets = [
        s for s in wafv2.list_ip_sets(Scope="REGIONAL")["IPSets"] if "cloud-sniper" in s["Name"]
    ]
    rules = [
        {
            "Name": f"block-{ip_set['Name']}",
            "Priority": DEMO_RULE_PRIORITY + index,
            "Statement": {"IPSetReferenceStatement": {"ARN": ip_set["ARN"]}},
            "Action": {"Block": {}},
            "VisibilityConfig": _visibility(f"block-{ip_set['Name']}"),
        }
        for index, ip_set in enumerate(ip_sets)
    ]
    web_acl = wafv2.create_web_acl(
        Name="demo-web-acl",
        Scope="REGIONAL",
        DefaultAction={"Allow": {}},
        Rules=rules,
        VisibilityConfig=_visibility("demo-web-acl"),
    )
    return web_acl["Summary"]["ARN"]


def _visibility(name: str) -> dict[str, Any]:
    return {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": name}
