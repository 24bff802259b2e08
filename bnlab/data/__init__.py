"""Layer 2: the data. CIFAR-10 found, downloaded, checked and decoded (cifar10), and every dataset held on
the device with its batches drawn there (datasets)."""
