"""Seed the emulated account with a small demo estate: VPC, subnets, ACLs, WAF, instances.

Also what the response catalogue acts on: an IAM user with an access key, an instance role with
a session, a public bucket, and an instance in an Auto Scaling group behind a target group.
"""

from __future__ import annotations

import json
from typing import Any

ESTATE_PARAMETER = "/cloud-sniper/local/estate"
DEMO_RULE_PRIORITY = 0

CI_USER = "ci-deploy"
WEB_ROLE = "web-server-role"
PUBLIC_BUCKET = "cloud-sniper-demo-public-assets"
APP_GROUP = "app-asg"
APP_TARGET_GROUP = "app-tg"
# An Amazon Linux image moto's EC2 knows in every region; named, as listing moto's 1,300 images
# took a second.
IMAGE_ID = "ami-12c6146b"


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
    image_id = IMAGE_ID
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
    estate.update(_ci_user(clients("iam")))
    estate.update(_web_role(clients("iam"), clients("sts"), ec2, estate["web_instance"]))
    estate["public_bucket"] = _public_bucket(clients("s3"))
    estate.update(_app_group(ec2, clients, estate, image_id))
    clients("ssm").put_parameter(
        Name=ESTATE_PARAMETER, Value=json.dumps(estate), Type="String", Overwrite=True
    )
    return estate


def load_estate(clients: Any) -> dict[str, str]:
    """The demo estate's identifiers, as seeded."""
    value = clients("ssm").get_parameter(Name=ESTATE_PARAMETER)["Parameter"]["Value"]
    return json.loads(value)


def _ci_user(iam: Any) -> dict[str, str]:
    """An IAM user with a long-term access key, as a CI system holds one."""
    iam.create_user(UserName=CI_USER, Tags=[{"Key": "team", "Value": "platform"}])
    key = iam.create_access_key(UserName=CI_USER)["AccessKey"]
    return {"ci_user": CI_USER, "ci_access_key": key["AccessKeyId"]}


def _web_role(iam: Any, sts: Any, ec2: Any, instance_id: str) -> dict[str, str]:
    """The web instance's role, and a session of it as the instance holds one (an ASIA key)."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(RoleName=WEB_ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam.create_instance_profile(InstanceProfileName=WEB_ROLE)
    iam.add_role_to_instance_profile(InstanceProfileName=WEB_ROLE, RoleName=WEB_ROLE)
    ec2.associate_iam_instance_profile(
        IamInstanceProfile={"Name": WEB_ROLE}, InstanceId=instance_id
    )
    # EC2 names the instance's sessions after the instance.
    session = sts.assume_role(RoleArn=role["Arn"], RoleSessionName=instance_id)
    return {
        "web_role": WEB_ROLE,
        "web_role_session_key": session["Credentials"]["AccessKeyId"],
        "web_role_session": session["AssumedRoleUser"]["AssumedRoleId"],
    }


def _public_bucket(s3: Any) -> str:
    """A bucket anyone can read, by its ACL and its policy, with no public access block."""
    s3.create_bucket(Bucket=PUBLIC_BUCKET)
    s3.put_bucket_acl(Bucket=PUBLIC_BUCKET, ACL="public-read")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{PUBLIC_BUCKET}/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=PUBLIC_BUCKET, Policy=json.dumps(policy))
    return PUBLIC_BUCKET


def _app_group(ec2: Any, clients: Any, estate: dict[str, str], image_id: str) -> dict[str, str]:
    """The app instance as a member of an Auto Scaling group and a target of a target group."""
    template = ec2.create_launch_template(
        LaunchTemplateName="app",
        LaunchTemplateData={"ImageId": image_id, "InstanceType": "t3.micro"},
    )["LaunchTemplate"]
    autoscaling = clients("autoscaling")
    # Empty at first, so that the group launches nothing of its own; attaching the instance
    # raises the desired capacity to one.
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=APP_GROUP,
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"]},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=0,
        VPCZoneIdentifier=estate["app_subnet"],
    )
    autoscaling.attach_instances(
        InstanceIds=[estate["app_instance"]], AutoScalingGroupName=APP_GROUP
    )
    elbv2 = clients("elbv2")
    target_group = elbv2.create_target_group(
        Name=APP_TARGET_GROUP,
        Protocol="HTTP",
        Port=80,
        VpcId=estate["vpc"],
        TargetType="instance",
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(
        TargetGroupArn=target_group, Targets=[{"Id": estate["app_instance"], "Port": 80}]
    )
    return {"app_group": APP_GROUP, "app_target_group": target_group}


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
