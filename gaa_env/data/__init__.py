"""Data: offline datasets, worker partitions and the quasi-validation set."""

from gaa_env.data.cifar import load_cifar10
from gaa_env.data.datasets import DATASETS, DataNotFoundError, Dataset, load_dataset, load_mnist
from gaa_env.data.healthcare import load_healthcare
from gaa_env.data.partition import PARTITIONS, Partition, make_partition, sample_quasi_set
from gaa_env.data.synthetic import SYNTHETIC_DATASETS
from gaa_env.data.yelp import load_yelp

DATASETS.update({"cifar10": load_cifar10, "yelp": load_yelp, "healthcare": load_healthcare, **SYNTHETIC_DATASETS})

__all__ = ["DATASETS", "PARTITIONS", "SYNTHETIC_DATASETS", "DataNotFoundError", "Dataset", "Partition",
           "load_cifar10", "load_dataset", "load_healthcare", "load_mnist", "load_yelp", "make_partition",
           "sample_quasi_set"]
