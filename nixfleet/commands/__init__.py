"""The `nixfleet` subcommands, one module each; `options` holds what they share."""
