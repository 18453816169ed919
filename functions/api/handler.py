"""Lambda behind API Gateway: the sluiceway HTTP API (src/sluiceway/api.py)."""

from sluiceway.handlers import api_handler

handler = api_handler()
