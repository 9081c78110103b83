"""Figures to compare between commits: handler cold imports, domain throughput, local pipeline."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
