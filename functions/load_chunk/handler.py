"""Lambda for the state "Load one range" of statemachines/import.asl.json."""

from sluiceway.handlers import lambda_handler
from sluiceway.load import load_chunk

handler = lambda_handler(load_chunk)
