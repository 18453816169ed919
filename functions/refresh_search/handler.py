"""Lambda for the state "Refresh the search summary" of statemachines/import.asl.json."""

from sluiceway.finalize import refresh_search
from sluiceway.handlers import lambda_handler

handler = lambda_handler(refresh_search)
