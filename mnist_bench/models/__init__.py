"""The models. Importing them here lets configs use short class paths (``class_path: CNN``)."""

from mnist_bench.models.alexnet import AlexNet, AlexNetClassifier
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.models.cnn import CNN
from mnist_bench.models.faster_rcnn import FasterRCNN, FasterRCNNClassifier
from mnist_bench.models.schedulers import WarmupCosineLR
from mnist_bench.models.vgg import VGG16, VGG16Classifier
from mnist_bench.models.vit import ViT

__all__ = [
    "CNN",
    "VGG16Classifier",
    "AlexNetClassifier",
    "ViT",
    "FasterRCNNClassifier",
    "MNISTClassifier",
    "WarmupCosineLR",
]
# the names before the renames, which checkpoints and saved configs of that time hold
# (mnist_bench.models.AlexNet)
RENAMED = {"AlexNet": AlexNet, "VGG16": VGG16, "FasterRCNN": FasterRCNN}
