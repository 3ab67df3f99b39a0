"""pyinfra facts of this repository: nixfleet's (nixfleet/facts/) under the names pyinfra's CLI
finds from here (`facts.nix.NixGenerations`), and any of your own."""
