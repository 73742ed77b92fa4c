"""The models. Importing them here lets configs use short class paths (``class_path: CNN``)."""

from mnist_bench.models.alexnet import AlexNetClassifier
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.models.cnn import CNN
from mnist_bench.models.faster_rcnn import FasterRCNNClassifier
from mnist_bench.models.schedulers import WarmupCosineLR
from mnist_bench.models.vgg import VGG16Classifier
from mnist_bench.models.vit import ViT

__all__ = ["CNN", "VGG16Classifier", "AlexNetClassifier", "ViT", "FasterRCNNClassifier", "MNISTClassifier",
           "WarmupCosineLR"]
