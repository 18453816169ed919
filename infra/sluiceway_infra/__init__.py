"""The AWS CDK app of sluiceway: one construct per capability, composed by stack.py."""
