# TensorFlow and PyTorch's Triton both carry LLVM: loading Triton after TensorFlow segfaults (measured
# here with torch 2.14.1 / TF 2.21). PyTorch's compiler stack, which loads Triton where installed, is
# therefore imported before any module of this package imports TensorFlow.
import torch._dynamo  # noqa: F401
