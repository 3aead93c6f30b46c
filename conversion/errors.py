class ConversionError(RuntimeError):
    """A conversion stage failed; the message names the stage and, where known, the failing node."""
