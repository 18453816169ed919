"""Lambda for the state "Record the failure" of statemachines/export.asl.json."""

from sluiceway.export_finish import fail_export
from sluiceway.handlers import lambda_handler

handler = lambda_handler(fail_export)
