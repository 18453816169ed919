"""Lambda for the state "Plan byte ranges" of statemachines/import.asl.json."""

from sluiceway.plan import plan_import
from sluiceway.handlers import lambda_handler

handler = lambda_handler(plan_import)
