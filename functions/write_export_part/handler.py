"""Lambda for the state "Write one part" of statemachines/export.asl.json."""

from sluiceway.export_part import write_part
from sluiceway.handlers import lambda_handler

handler = lambda_handler(write_part)
