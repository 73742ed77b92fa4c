"""Plain ``nn.Module`` building blocks, with no Lightning in them."""
