"""One CDK stack per service, plus the shared data stack and the pipeline stack."""
