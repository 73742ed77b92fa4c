"""The models. Importing them here lets configs use short class paths (``class_path: CNN``)."""

from mnist_bench.models.alexnet import AlexNet
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.models.cnn import CNN
from mnist_bench.models.faster_rcnn import FasterRCNN
from mnist_bench.models.schedulers import WarmupCosineLR
from mnist_bench.models.vgg import VGG16
from mnist_bench.models.vit import ViT

__all__ = ["CNN", "VGG16", "AlexNet", "ViT", "FasterRCNN", "MNISTClassifier", "WarmupCosineLR"]
