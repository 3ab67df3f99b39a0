"""pyinfra operations of this repository: nixfleet's (nixfleet/operations/) under the names
pyinfra's CLI and your own deploy files find from here, and any of your own."""
