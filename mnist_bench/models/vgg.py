"""VGG16 (torchvision), from ImageNet weights when available, on MNIST."""

from mnist_bench.models.finetune import FinetunedClassifier


class VGG16Classifier(FinetunedClassifier):
    """torchvision's VGG16 features (13 convs, 14.7M parameters) with a slim head; input resized to >= 32
    px."""

    model_name = "vgg16"
    arch = "vgg16"


VGG16 = VGG16Classifier  # the name before 2026-11: checkpoints written then still load
