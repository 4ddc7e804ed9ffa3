"""streamtrain."""
