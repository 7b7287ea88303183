"""Object detection training: torchvision detectors, box datasets with box-aware augmentation, the task."""
