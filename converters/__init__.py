"""Import of PyTorch SwiftFormer checkpoints and export to mobile formats."""
