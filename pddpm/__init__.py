"""pddpm-uad: Patched Diffusion Models for Unsupervised Anomaly Detection in Brain MRI, as a pipeline."""

__version__ = "0.1.0"
