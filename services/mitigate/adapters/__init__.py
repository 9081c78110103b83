"""The AWS side of the mitigate service: the WAF IP sets and their queue, network ACLs, tables."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from services.mitigate.actions import Ports
from services.mitigate.adapters.blocks import DynamoBlockStore
from services.mitigate.adapters.knowledge import DynamoKnowledgeBase
from services.mitigate.adapters.members import StsMemberAccounts
from services.mitigate.adapters.nacl import Ec2NetworkAcls
from services.mitigate.adapters.records import DynamoRecordStore
from services.mitigate.adapters.waf import WafChangeQueue, WafIpSets
from services.mitigate.settings import Settings, WriterSettings
from services.mitigate.waf_writer import WriterPorts

# The state machine retries a failed step with backoff; the SDK's default (legacy mode, five
# attempts, long sleeps) would stack its own retries under it and eat the function's timeout.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 2})
# The WAF writer has no state machine above it: a throttled write waits in the SDK's backoff
# rather than going back to the queue for a visibility timeout.
WRITER_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})

__all__ = [
    "DynamoBlockStore",
    "DynamoKnowledgeBase",
    "DynamoRecordStore",
    "Ec2NetworkAcls",
    "StsMemberAccounts",
    "WafChangeQueue",
    "WafIpSets",
    "build_ports",
    "build_writer_ports",
]


def build_ports(settings: Settings, session: Any = None) -> Ports:
    """Create the clients and the adapters over them; call once per cold start."""
    session = session or boto3.session.Session()
    dynamodb = session.resource("dynamodb", config=CLIENT_CONFIG)
    return Ports(
        ip_sets=WafChangeQueue(
            session.client("sqs", config=CLIENT_CONFIG),
            names={4: settings.waf_ipv4_set_name, 6: settings.waf_ipv6_set_name},
            queue_url=settings.waf_changes_queue_url,
        ),
        network_acls=Ec2NetworkAcls(session.client("ec2", config=CLIENT_CONFIG)),
        blocks=DynamoBlockStore(dynamodb.Table(settings.blocks_table)),
        knowledge=DynamoKnowledgeBase(dynamodb.Table(settings.indicators_table)),
        rule_range=settings.nacl_rule_range,
        default_ttl_seconds=settings.default_block_ttl_seconds,
        nacl_entry_limit=settings.nacl_entry_limit,
        records=DynamoRecordStore(dynamodb.Table(settings.actions_table)),
        clients=_Clients(session),
        # The WAF IP sets and the tables stay ours: only these act in a member account.
        members=StsMemberAccounts(session, _member_adapters),
    )


def _member_adapters(session: Any) -> tuple[Ec2NetworkAcls, _Clients]:
    """The network ACL adapter and the catalogue's clients over a member role's session."""
    return Ec2NetworkAcls(session.client("ec2", config=CLIENT_CONFIG)), _Clients(session)


def build_writer_ports(settings: WriterSettings, session: Any = None) -> WriterPorts:
    """The WAF writer's adapters: the IP sets and the blocks table; call once per cold start."""
    session = session or boto3.session.Session()
    dynamodb = session.resource("dynamodb", config=WRITER_CLIENT_CONFIG)
    return WriterPorts(
        ip_sets=WafIpSets(
            session.client("wafv2", config=WRITER_CLIENT_CONFIG),
            scope=settings.waf_scope,
            names={4: settings.waf_ipv4_set_name, 6: settings.waf_ipv6_set_name},
        ),
        blocks=DynamoBlockStore(dynamodb.Table(settings.blocks_table)),
    )


class _Clients:
    """One client per AWS service, made at first use and kept for the cold start."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._made: dict[str, Any] = {}

    def __call__(self, service_name: str) -> Any:
        if service_name not in self._made:
            self._made[service_name] = self._session.client(service_name, config=CLIENT_CONFIG)
        return self._made[service_name]
