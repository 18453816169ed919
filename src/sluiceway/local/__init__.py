"""The embedded stack: everything sluiceway needs on AWS, run on one machine."""
