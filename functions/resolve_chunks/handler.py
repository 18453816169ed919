"""Lambda for the state "Fix record boundaries" of statemachines/import.asl.json."""

from sluiceway.handlers import lambda_handler
from sluiceway.plan import resolve_chunks

handler = lambda_handler(resolve_chunks)
