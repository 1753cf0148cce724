"""Values shared by the data pipeline and the losses."""

IGNORE_INDEX = -100  # label of a position that has no target (prompt, padding); as PyTorch's cross_entropy default
