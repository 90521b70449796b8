"""A Flower app that runs fedticket's HideNseek over its own model and its own data."""
