"""Lambda for the state "Count quotes in one range" of statemachines/import.asl.json."""

from sluiceway.handlers import lambda_handler
from sluiceway.plan import scan_chunk

handler = lambda_handler(scan_chunk)
