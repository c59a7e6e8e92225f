"""requester package."""
