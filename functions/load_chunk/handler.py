"""Lambda for the state "Load one range" of statemachines/import.asl.json."""

from sluiceway.load import load_chunk
from sluiceway.handlers import lambda_handler

handler = lambda_handler(load_chunk)
