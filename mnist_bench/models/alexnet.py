"""AlexNet (torchvision), from ImageNet weights when available, on MNIST."""

from mnist_bench.models.finetune import FinetunedClassifier


class AlexNetClassifier(FinetunedClassifier):
    """torchvision's AlexNet features (5 convs, 2.5M parameters) with a slim head; input resized to >= 63
    px."""

    model_name = "alexnet"
    arch = "alexnet"


AlexNet = AlexNetClassifier  # the name before 2026-11: checkpoints written then still load
