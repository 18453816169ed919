"""Lambda for the state "Fix record boundaries" of statemachines/import.asl.json."""

from sluiceway.plan import resolve_chunks
from sluiceway.handlers import lambda_handler

handler = lambda_handler(resolve_chunks)
