"""fedticket: lottery tickets for federated learning and graph neural networks, on one core."""

__version__ = "0.1.0"
