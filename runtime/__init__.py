"""Every runtime a converted model runs in, behind one interface (clip.py, stream.py; models.open_model
opens any model file), and the apps that run any of them: evaluate.py (figures on a labelled split),
predict.py (signs in a video or a camera), live.py (letters on continuous video) and web.py (the page)."""

# Before any module of this package loads TensorFlow: see conversion/__init__.py.
import torch._dynamo  # noqa: F401
