"""`python -m bench.run` (or `make bench`): speed, memory and size figures, written to BENCHMARKS.md."""

# Importing TensorFlow before PyTorch's Triton segfaults; the conversion package loads PyTorch's
# compiler stack first, so every bench module is safe whatever it imports next.
import conversion  # noqa: F401
