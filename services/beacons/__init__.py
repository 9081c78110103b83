"""The scheduled beacon scan: the analysis on Athena over the flow logs, beacons as findings."""
