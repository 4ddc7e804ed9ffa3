"""The dense network: the interface users write against (``api``), the zoo, and the JAX step."""
