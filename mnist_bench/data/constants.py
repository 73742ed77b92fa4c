"""The one home of MNIST's facts: class count, image size, normalization and the official raw files."""

NUM_CLASSES = 10
IMAGE_SIZE = 28
# Mean and std of the 60k training images, as fractions of 255.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

TRAIN_SIZE = 60_000
TEST_SIZE = 10_000

# name -> (md5 of the uncompressed file, number of items); torchvision's raw layout: <data_dir>/MNIST/raw/<name>.
RAW_FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", TRAIN_SIZE),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", TRAIN_SIZE),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", TEST_SIZE),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", TEST_SIZE),
}
