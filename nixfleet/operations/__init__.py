"""Custom pyinfra operations: what nixfleet changes on a host."""
