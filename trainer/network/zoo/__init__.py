"""Built-in networks, one short file each: ``[network] model = "<file name>"``."""
