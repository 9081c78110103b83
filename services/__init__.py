"""The Lambda services of the pipeline."""
