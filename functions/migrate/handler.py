"""Lambda behind the Custom::Migrations resource: applies the schema on every `cdk deploy`."""

from sluiceway.deploy import apply_migrations
from sluiceway.handlers import lambda_handler

handler = lambda_handler(apply_migrations)
