"""Lambda for the state "Write the manifest" of statemachines/export.asl.json."""

from sluiceway.export_finish import finish_export
from sluiceway.handlers import lambda_handler

handler = lambda_handler(finish_export)
