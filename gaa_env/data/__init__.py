"""Data: offline datasets, worker partitions and the quasi-validation set."""

from gaa_env.data.datasets import DATASETS, DataNotFoundError, Dataset, load_dataset, load_mnist
from gaa_env.data.partition import PARTITIONS, Partition, make_partition, sample_quasi_set

__all__ = ["DATASETS", "PARTITIONS", "DataNotFoundError", "Dataset", "Partition", "load_dataset",
           "load_mnist", "make_partition", "sample_quasi_set"]
