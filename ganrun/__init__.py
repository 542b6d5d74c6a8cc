"""ganrun: a config-driven GAN experiment runner."""

__version__ = "0.1.0"
