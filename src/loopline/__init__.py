"""loopline: the production line for the machine-learning loop."""

__version__ = "0.1.0"
