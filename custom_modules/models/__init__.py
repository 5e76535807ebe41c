"""Neural network models used by the recipes (thin ``nn.Module``s with keyword arguments)."""
