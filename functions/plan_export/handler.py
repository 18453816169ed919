"""Lambda for the state "Plan row ranges" of statemachines/export.asl.json."""

from sluiceway.export_plan import plan_export
from sluiceway.handlers import lambda_handler

handler = lambda_handler(plan_export)
