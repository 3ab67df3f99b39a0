"""agenix-compatible secrets managed in Python: rules from the inventory, *.age via pyrage."""
