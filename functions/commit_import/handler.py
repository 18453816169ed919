"""Lambda for the state "Commit and move the ref" of statemachines/import.asl.json."""

from sluiceway.finalize import commit_import
from sluiceway.handlers import lambda_handler

handler = lambda_handler(commit_import)
