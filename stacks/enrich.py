"""CloudSniper-Enrich: the function that records indicators and recalls their history."""

from __future__ import annotations

from aws_cdk import Stack
from constructs import Construct

from cloud_sniper.domain import naming
from stacks import references
from stacks.config import FUNCTIONS, Settings
from stacks.service_function import ServiceCode, ServiceFunction


class EnrichStack(Stack):
    """The enrich step of the pipeline."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.enrich = ServiceFunction(
            self,
            "Enrich",
            spec=FUNCTIONS["enrich"],
            code=ServiceCode(self),
            settings=settings,
            environment={"INDICATORS_TABLE": naming.INDICATORS_TABLE},
        )
        indicators = references.table(self, naming.INDICATORS_TABLE)
        indicators.grant(self.enrich.role, "dynamodb:UpdateItem")
