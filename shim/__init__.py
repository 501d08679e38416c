"""pycni: a Docker network driver that runs CNI plugins."""

__version__ = "0.1.0"
