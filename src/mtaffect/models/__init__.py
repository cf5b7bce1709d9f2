"""Networks: our own ResNet-50 (torchvision and Caffe/FER+ layouts), the multitask heads, the GRU."""
