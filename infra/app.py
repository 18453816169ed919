"""The CDK app (`cdk synth` runs `python3 infra/app.py` from the repository root)."""

from aws_cdk import App

from sluiceway_infra.checks import add_checks
from sluiceway_infra.constants import STACK_ID
from sluiceway_infra.stack import SluicewayStack

app = App()
SluicewayStack(app, STACK_ID)
add_checks(app)
app.synth()
