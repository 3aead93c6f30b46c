"""Every runtime a converted model runs in, behind one interface (clip.py, stream.py), and the apps that
run any of them: evaluate.py (figures on a labelled split) and predict.py (signs in a video or a camera)."""

# Before any module of this package loads TensorFlow: see conversion/__init__.py.
import torch._dynamo  # noqa: F401
