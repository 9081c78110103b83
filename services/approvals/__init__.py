"""The approvals service: the API through which approvers list, read and answer approvals."""
