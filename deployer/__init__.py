"""deployer: ship Docker Compose apps to servers over SSH, declaratively."""

__version__ = "0.1.0"
