"""Using a trained model: ``inference`` (a checkpoint back as a model), ``images`` (a photo made into the
dataset's kind of image), ``predict`` (``mnist-bench predict``) and ``export`` (``mnist-bench export``,
ONNX)."""
