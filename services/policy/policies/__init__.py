"""Built-in policies, one module each; the module docstring documents its Settings."""
