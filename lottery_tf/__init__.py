"""lottery-tf: find, study and ship lottery tickets with TensorFlow/Keras."""

__version__ = "0.1.0"
