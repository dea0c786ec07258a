"""Training and evaluation of the bundled default model (`spandrel_fdat/models/`)."""
