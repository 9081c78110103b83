"""The post-incident playbook: what to check next for each finding family, how each action ends.

The families follow the default policy's rules, some split finer where the follow-up differs
(root use, defences turned off, pentest tools), plus the families it only notifies about. The
first family whose match the finding meets gives its checks; `other` takes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from cloud_sniper.domain.models import ActionKind, Direction, Finding
from cloud_sniper.domain.policy import Match, matches


@dataclass(frozen=True)
class Family:
    """A family of findings and the few things to check once its incident is contained."""

    name: str
    title: str
    match: Match
    checks: tuple[str, ...]


def _types(*types: str, **conditions: object) -> Match:
    return Match.model_validate({"types": list(types), **conditions})


_BRUTE_FORCE = (
    "UnauthorizedAccess:EC2/SSHBruteForce",
    "UnauthorizedAccess:EC2/RDPBruteForce",
    "Impact:EC2/WinRMBruteForce",
)

FAMILIES: tuple[Family, ...] = (
    Family(
        "other-security-products",
        "A finding of another AWS security product",
        _types(
            "*",
            products=[
                "Inspector",
                "Macie",
                "IAM Access Analyzer",
                "Security Hub",
                "Config",
                "Firewall Manager",
            ],
        ),
        (
            "Open the finding in the product that raised it and give the resource an owner.",
            "Fix what it names (patch the package, remove the sensitive data, narrow the "
            "external access), then confirm the product closes the finding.",
            "If the risk is accepted, suppress it in that product with the reason written down.",
        ),
    ),
    Family(
        "attack-sequence",
        "An attack sequence: several signals of one attack",
        _types("AttackSequence:*"),
        (
            "Go through every signal the sequence lists: each is evidence to close on its own.",
            "Treat every resource the sequence names as compromised until shown otherwise.",
            "Look for persistence made during the sequence: new IAM users, access keys, roles, "
            "Lambda functions and EventBridge rules.",
        ),
    ),
    Family(
        "brute-force-inbound",
        "Password guessing against an instance",
        _types(*_BRUTE_FORCE, directions=[Direction.INBOUND]),
        (
            "Search the instance's login logs (auth.log or secure; Windows Security events "
            "4624 and 4625) for a successful login from the address.",
            "Close SSH, RDP and WinRM to the internet in the security group; reach the "
            "instance through Session Manager or a bastion.",
            "Allow keys only for SSH, and Network Level Authentication with lockout for RDP.",
        ),
    ),
    Family(
        "instance-attacks-others",
        "The instance attacks others",
        _types(
            *_BRUTE_FORCE,
            "Backdoor:EC2/DenialOfService.*",
            "Backdoor:EC2/Spambot",
            "Impact:EC2/PortSweep",
            "Recon:EC2/Portscan",
            "LateralMovement:EC2/RemoteServices",
            "Exfiltration:EC2/TransferDataToCloudAccount",
        ),
        (
            "Find the process making the connections: Runtime Monitoring, or the process list "
            "and logs in the forensic snapshots.",
            "Work out how the instance was taken: its exposed services, its patch level, its "
            "instance role's calls in CloudTrail since the first seen.",
            "Rebuild it from a clean image before `cloud-sniper release`; keep the snapshots.",
            "Answer AWS abuse reports about it, and tell the victims' owners if asked.",
        ),
    ),
    Family(
        "port-probe",
        "A probe of an exposed port",
        _types("Recon:EC2/PortProbeUnprotectedPort", "Recon:EC2/PortProbeEMRUnprotectedPort"),
        (
            "Decide whether the probed port must be open to the internet; close it in the "
            "security group if not.",
            "Check the service's logs and the VPC flow logs for a login or an exploit attempt "
            "after the probe.",
            "Patch the service listening on the port.",
        ),
    ),
    Family(
        "custom-threat-list-inbound",
        "An address on your own threat list reached an instance",
        _types("UnauthorizedAccess:EC2/MaliciousIPCaller.Custom", directions=[Direction.INBOUND]),
        (
            "Confirm the address's entry in your threat list is still current, and its source.",
            "Check what the address reached on the instance: VPC flow logs, the service's logs.",
            "Look for the address elsewhere in the estate: CloudTrail, load balancer and WAF logs.",
        ),
    ),
    Family(
        "api-from-malicious-address",
        "API calls from a threat-listed or Tor address",
        _types(
            "*:IAMUser/MaliciousIPCaller*",
            "*:IAMUser/TorIPCaller",
            "*:S3/MaliciousIPCaller*",
            "*:S3/TorIPCaller",
            "*:Kubernetes/MaliciousIPCaller*",
            "*:Kubernetes/TorIPCaller",
            "*:RDS/MaliciousIPCaller*",
            "*:RDS/TorIPCaller*",
        ),
        (
            "List in CloudTrail (or the database's or cluster's audit log) every call made from "
            "the address, and what it changed.",
            "Rotate the credentials those calls used if any of them succeeded.",
            "Where callers should come from your network only, add an aws:SourceIp or VPC "
            "endpoint condition to the policies.",
        ),
    ),
    Family(
        "compromised-workload-c2",
        "The workload talks to attacker infrastructure",
        _types(
            "Backdoor:*/C&CActivity*",
            "CryptoCurrency:*",
            "Trojan:*",
            "Impact:*/BitcoinDomainRequest*",
            "Impact:*/MaliciousDomainRequest*",
            "Impact:*/AbusedDomainRequest*",
            "Impact:*/SuspiciousDomainRequest*",
            "Impact:*/CryptoMinerExecuted",
            "UnauthorizedAccess:*/MaliciousIPCaller*",
            "UnauthorizedAccess:*/TorClient",
            "UnauthorizedAccess:*/TorRelay",
            "UnauthorizedAccess:*/MetadataDNSRebind",
            "Backdoor:*/Beaconing*",
        ),
        (
            "Find the process that resolved or reached the C2: Runtime Monitoring, DNS query "
            "logs, the forensic snapshots.",
            "Read the instance role's calls in CloudTrail since the first seen.",
            "Search the estate's DNS and flow logs for the same domain and address.",
            "Rebuild the workload from a clean image and rotate every secret it held before "
            "`cloud-sniper release`.",
        ),
    ),
    Family(
        "malware-on-instance",
        "Malware or malicious run-time behaviour on an instance",
        _types(
            "Execution:*/MaliciousFile*",
            "Execution:Runtime/*",
            "DefenseEvasion:Runtime/*",
            "Persistence:Runtime/*",
            "PrivilegeEscalation:Runtime/*",
            "Discovery:Runtime/*",
            "Persistence:EC2/*",
            resource_kinds=["Instance", "Container"],
        ),
        (
            "Scan the forensic snapshots with GuardDuty Malware Protection or an offline scanner.",
            "Trace the process lineage the finding names back to how it arrived: a deploy, a "
            "package, a login.",
            "Look for persistence: cron jobs, systemd units, authorized_keys, new local users.",
            "Rebuild from a clean image; release only the rebuilt instance.",
        ),
    ),
    Family(
        "compromised-credentials",
        "Credentials used by someone else",
        _types(
            "UnauthorizedAccess:IAMUser/*CredentialExfiltration*",
            "UnauthorizedAccess:IAMUser/ConsoleLoginSuccess.B",
            "*:IAMUser/AnomalousBehavior",
            "InitialAccess:IAM/ValidAccounts",
            "PrivilegeEscalation:IAM/*",
            "Persistence:IAM/*",
        ),
        (
            "List in CloudTrail what the credentials did since the first seen, and from where.",
            "Undo what they created: IAM users, access keys, roles, policies, instances, "
            "Lambda functions.",
            "Find how they leaked (a repository, a CI log, an instance's metadata) and close it.",
            "Give the owner new credentials; `cloud-sniper rollback` only once they are rotated.",
        ),
    ),
    Family(
        "bucket-made-public",
        "A bucket made public",
        _types(
            "Policy:S3/BucketBlockPublicAccessDisabled",
            "Policy:S3/BucketAnonymousAccessGranted",
            "Policy:S3/BucketPublicAccessGranted",
        ),
        (
            "Check the S3 server access logs or CloudTrail data events for reads while it was "
            "public.",
            "Find who changed the bucket's policy, ACL or public access block, and why.",
            "If it must serve the public, put CloudFront with origin access control in front.",
        ),
    ),
    Family(
        "root-credential-usage",
        "The root user was used",
        _types("Policy:IAMUser/*RootCredentialUsage"),
        (
            "Ask who used the root user and for what: no routine task needs it.",
            "Check the root user has MFA and no access key.",
            "Review what the root session did in CloudTrail.",
        ),
    ),
    Family(
        "defences-turned-off",
        "Logging or a defence turned off",
        _types(
            "Stealth:*",
            "DefenseImpairment:*",
            "DefenseEvasion:IAMUser/*",
            "Policy:S3/AccountBlockPublicAccessDisabled",
        ),
        (
            "Turn the control back on (CloudTrail, S3 logging, GuardDuty, the account's public "
            "access block, the password policy) and confirm it records again.",
            "Find who turned it off, and what else that principal did around that time.",
            "Deny the call with a service control policy outside a break-glass role.",
        ),
    ),
    Family(
        "pentest-tools",
        "Penetration testing tools in use",
        _types("PenTest:*"),
        (
            "Ask whether an authorized penetration test ran from that host; if not, treat it "
            "as an attack.",
            "List in CloudTrail what the tool's calls reached.",
            "Announce authorized tests in advance so their findings can be suppressed.",
        ),
    ),
    Family(
        "s3-data-destruction",
        "Objects deleted in bulk",
        _types("Impact:S3/DataDestruction"),
        (
            "Restore the deleted objects from versions or backups.",
            "Find the principal; revoke its credentials unless it was a planned clean-up.",
            "Turn on versioning, and Object Lock for data that must not be deleted.",
        ),
    ),
    Family(
        "malware-outside-instances",
        "Malware in an object, a volume, a snapshot or an image",
        _types("Object:*", "Execution:*/MaliciousFile*"),
        (
            "Quarantine or delete the object, volume, snapshot or image the scan flagged.",
            "Find who wrote it (CloudTrail data events) and from where.",
            "Scan what was made from the same source: other objects, backups, images.",
        ),
    ),
    Family(
        "kubernetes",
        "A Kubernetes cluster's finding",
        _types("*:Kubernetes/*", "*:EKS/*"),
        (
            "Review the cluster's audit log for the user and what it created: pods, roles, "
            "bindings, secrets read.",
            "Check the pod's service account permissions and its image's source.",
            "Delete the workloads the attacker created and rotate the secrets the pod could read.",
        ),
    ),
    Family(
        "database",
        "A database's finding",
        _types("*:RDS/*"),
        (
            "Review the database's login and query logs for the user and the address.",
            "Rotate the database user's password and remove users nobody owns.",
            "Keep the database off the internet: no public access, a security group that "
            "admits the application alone.",
        ),
    ),
    Family(
        "lambda-function",
        "A Lambda function's finding",
        _types("*:Lambda/*"),
        (
            "Review the function's recent deployments and who made them.",
            "Check the destinations its code and its dependencies reach.",
            "Rotate the secrets in its environment and narrow its role.",
        ),
    ),
    Family(
        "s3-behaviour",
        "Unusual use of a bucket",
        _types("*:S3/*"),
        (
            "Review the bucket's CloudTrail data events for the principal and its calls.",
            "Check the bucket policy grants only what its users need.",
            "Check versioning, logging and encryption are on.",
        ),
    ),
    Family(
        "iam-behaviour",
        "Unusual use of IAM credentials",
        _types("*:IAMUser/*", "*:IAM/*", "*:RolesAnywhere/*", "*:Organizations/*"),
        (
            "Review the principal's calls in CloudTrail since the first seen, and from where.",
            "Confirm with the principal's owner that the activity was theirs.",
            "Remove permissions the principal does not use (IAM Access Analyzer's unused access).",
        ),
    ),
    Family(
        "workload",
        "A finding about an instance or a container",
        _types("*:EC2/*", "*:Runtime/*", "*:ECS/*", "*:Container/*"),
        (
            "Check the instance's or container's owner expected the activity.",
            "Review its security groups, its instance role and its patch level.",
            "Look at its VPC flow logs and DNS queries around the first seen.",
        ),
    ),
    Family(
        "other",
        "Any other finding",
        _types("*"),
        (
            "Read the finding's description and decide whether the activity was expected.",
            "Give the resource an owner and agree on a fix or a suppression rule.",
            "Write down what was learned in the incident's record.",
        ),
    ),
)


def family_for(finding: Finding | None, finding_type: str | None = None) -> Family:
    """The first family the finding meets; an unread finding goes by its type alone."""
    for family in FAMILIES:
        if finding is not None:
            hit = matches(family.match, finding)
        else:
            # The conditions beyond the type are unknown, and the product is not guessed.
            types = family.match.types
            hit = family.match.products is None and any(
                fnmatchcase(finding_type or "", glob) for glob in types
            )
        if hit:
            return family
    return FAMILIES[-1]


@dataclass(frozen=True)
class Ending:
    """How an action of a kind ends: on its own at its expiry, or by a person's command."""

    expires: bool
    undo: str  # the command, with {incident_id}, {target} and {action} to fill in
    undoes: str


_ROLLBACK = "cloud-sniper rollback {incident_id} --action {action} --reason TEXT"

ENDINGS: dict[ActionKind, Ending] = {
    ActionKind.WAF_BLOCK: Ending(True, _ROLLBACK, "takes the address out of the WAF IP set"),
    ActionKind.NACL_BLOCK: Ending(True, _ROLLBACK, "deletes the network ACL deny entry"),
    ActionKind.C2_BLOCK: Ending(
        True, _ROLLBACK, "deletes the outbound deny entries and the DNS Firewall domain"
    ),
    ActionKind.ISOLATE_INSTANCE: Ending(
        False,
        "cloud-sniper release {target} --reason TEXT",
        "puts back the security groups, protections, Auto Scaling and target groups; the "
        "forensic snapshots stay",
    ),
    ActionKind.REVOKE_CREDENTIALS: Ending(
        False, _ROLLBACK, "reactivates the key, or removes the role's deny of older sessions"
    ),
    ActionKind.BLOCK_PUBLIC_ACCESS: Ending(
        False, _ROLLBACK, "puts back the bucket's previous public access block"
    ),
}

# The actions the response catalogue checks in the account once applied (its verify step).
VERIFIED_IN_ACCOUNT = frozenset(
    {
        ActionKind.C2_BLOCK,
        ActionKind.ISOLATE_INSTANCE,
        ActionKind.REVOKE_CREDENTIALS,
        ActionKind.BLOCK_PUBLIC_ACCESS,
    }
)
