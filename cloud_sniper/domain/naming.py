"""Names every part of the system agrees on: resources, incidents and executions."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

PREFIX = "cloud-sniper"
EVENT_BUS = PREFIX
EVENT_SOURCE = PREFIX
STATE_MACHINE = f"{PREFIX}-pipeline"

# Detail types on the project's event bus.
FINDING_DETAIL_TYPE = "GuardDuty Finding"
REPLAY_DETAIL_TYPE = "Cloud Sniper Replay"
INCIDENT_REPORTED_DETAIL_TYPE = "Cloud Sniper Incident Reported"

# Tables, one per kind of record.
INDICATORS_TABLE = f"{PREFIX}-indicators"
INCIDENTS_TABLE = f"{PREFIX}-incidents"
BLOCKS_TABLE = f"{PREFIX}-blocks"
APPROVALS_TABLE = f"{PREFIX}-approvals"
# Actions of the response catalogue (isolation, revocation, bucket closure, C2 cut).
ACTIONS_TABLE = f"{PREFIX}-actions"
ACTIONS_BY_INCIDENT_INDEX = "by-incident"
# Each clock hour's automatic actions, counted against the policy's budget.
BUDGET_TABLE = f"{PREFIX}-budget"
# The blocks table's index by incident_id: the report finds an incident's blocks through it.
BLOCKS_BY_INCIDENT_INDEX = "by-incident"

INTAKE_QUEUE = f"{PREFIX}-intake"
INTAKE_DLQ = f"{PREFIX}-intake-dlq"
# The changes to the WAF IP sets, applied by the one WAF writer, and those it could not apply.
WAF_CHANGES_QUEUE = f"{PREFIX}-waf-changes"
WAF_CHANGES_DLQ = f"{PREFIX}-waf-changes-dlq"
APPROVAL_TOPIC = f"{PREFIX}-approvals"
# Approvals nobody answered in time, where the policy escalates them: asked once more there.
APPROVAL_ESCALATION_TOPIC = f"{PREFIX}-approvals-escalation"
# The stack of the approvals API, through which `cloud-sniper approvals` answers a deployment.
APPROVALS_API_STACK = "CloudSniper-Approvals"
APPROVALS_API = f"{PREFIX}-approvals"
# Its stack's output holding the API's URL, where the command finds it.
APPROVALS_API_URL_OUTPUT = "ApiUrl"
# The IAM group of the people who may answer approvals (assumed roles are named by pattern).
APPROVERS_GROUP = f"{PREFIX}-approvers"
# The error a denied approval fails the waiting task with; the state machine catches it.
APPROVAL_DENIED_ERROR = "CloudSniper.ApprovalDenied"
WAF_IPV4_SET = f"{PREFIX}-blocked-ipv4"
WAF_IPV6_SET = f"{PREFIX}-blocked-ipv6"
# The SSM parameter holding the deployed policy: `cloud-sniper policy push` changes it.
POLICY_PARAMETER = f"/{PREFIX}/policy"

# Lambda functions by role; the state machine and the stacks refer to them by these names.
FUNCTIONS = {
    "receive": f"{PREFIX}-receive",
    "ingest": f"{PREFIX}-ingest",
    "enrich": f"{PREFIX}-enrich",
    "decide": f"{PREFIX}-decide",
    "request_approval": f"{PREFIX}-request-approval",
    "mitigate": f"{PREFIX}-mitigate",
    "expire": f"{PREFIX}-expire",
    "waf_writer": f"{PREFIX}-waf-writer",
    "report": f"{PREFIX}-report",
    "summary": f"{PREFIX}-summary",
    "approvals": f"{PREFIX}-approvals",
    "beacons": f"{PREFIX}-beacons",
}

# The beacon scan on Athena: its stack, workgroup, and the Glue table over the flow logs.
BEACONS_STACK = "CloudSniper-Beacons"
BEACONS_WORKGROUP = f"{PREFIX}-beacons"
FLOW_LOGS_DATABASE = "cloud_sniper"
FLOW_LOGS_TABLE = "vpc_flow_logs"

# The role mitigate and expire assume in a member account to act on a finding's resources there
# (stack CloudSniper-MemberRole, deployed to every member account by a StackSet).
MEMBER_ROLE = f"{PREFIX}-responder"

EXEMPT_TAG = "cloud-sniper:exempt"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def reports_bucket(account_id: str, region: str) -> str:
    return f"{PREFIX}-reports-{account_id}-{region}"


def athena_results_bucket(account_id: str, region: str) -> str:
    """Where the beacon scan's Athena queries keep their results."""
    return f"{PREFIX}-athena-results-{account_id}-{region}"


def flow_logs_bucket(account_id: str, region: str) -> str:
    """The bucket the beacon scan reads flow logs from unless the deployment names another."""
    return f"{PREFIX}-flow-logs-{account_id}-{region}"


def incident_id(finding_source: str, finding_id: str) -> str:
    """One incident per finding, whatever the number of deliveries."""
    digest = hashlib.sha256(f"{finding_source}|{finding_id}".encode()).hexdigest()
    return f"inc-{digest[:16]}"


def member_session_name(incident_id: str) -> str:
    """The session name of the member role assumed for an incident: 64 characters at most."""
    return f"{PREFIX}-{incident_id}"[:64]


def approval_id(execution_name: str) -> str:
    """The id of an execution's approval: one per execution, short enough for a person to type."""
    digest = hashlib.sha256(execution_name.encode()).hexdigest()
    return f"apr-{digest[:10]}"


def execution_name(finding_id: str, updated_at: datetime, dry_run: bool = False) -> str:
    """Name an execution after the finding and its update, so a redelivery cannot start it twice.

    Step Functions names allow 80 characters from [A-Za-z0-9-_]; a long or odd finding id is
    shortened, and the hash keeps names of different findings apart.
    """
    stamp = updated_at.strftime("%Y%m%dT%H%M%S")
    digest = hashlib.sha256(f"{finding_id}|{updated_at.isoformat()}|{dry_run}".encode())
    readable = _UNSAFE.sub("-", finding_id).strip("-")[:40] or "finding"
    prefix = "dry-" if dry_run else ""
    return f"{prefix}{readable}-{stamp}-{digest.hexdigest()[:8]}"
