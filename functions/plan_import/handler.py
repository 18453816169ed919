"""Lambda for the state "Plan byte ranges" of statemachines/import.asl.json."""

from sluiceway.handlers import lambda_handler
from sluiceway.plan import plan_import

handler = lambda_handler(plan_import)
