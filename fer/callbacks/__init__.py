"""Lightning callbacks: thin shells that record or draw during training."""
