"""responder package."""
