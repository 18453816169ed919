"""Lambda for the state "Record the failure" of statemachines/import.asl.json."""

from sluiceway.finalize import fail_import
from sluiceway.handlers import lambda_handler

handler = lambda_handler(fail_import)
