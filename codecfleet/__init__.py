"""codecfleet: measure LLM-written video codecs honestly."""
__version__ = "0.1.0"
