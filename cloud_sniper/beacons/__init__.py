"""Beaconing detection in VPC Flow Logs: hosts calling home on a schedule."""
