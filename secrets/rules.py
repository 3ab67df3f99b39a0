"""Who may decrypt which secret, and how it lands on a host (/run/agenix/<name>).

Plain data; nixfleet.secrets.rules resolves it against inventory.py and writes
secrets/secrets.nix (agenix's rules file) and nix/secrets.json (read by the flake).

recipients: names of groups (allUsers, allHosts, and the inventory's derived groups such as
            workstations, servers), hosts (razer) or users. Their public keys come from the
            inventory (hosts' ssh.hostKey, users' sshKey); they are never written here.
owner, group, mode: of /run/agenix/<name>; DEFAULTS apply where a rule says nothing.
            "{admin}" is the receiving host's admin user (its first user).
"{user}" in a name: one secret per user of the inventory; "{user}" in its owner is that user.
            Such a secret goes only to the hosts that have that user.
"""

DEFAULTS = {"owner": "root", "group": "root", "mode": "0400"}

_EVERYONE = ["allUsers", "allHosts"]
# API keys: readable by the host's admin user only (the group gets no bits at 0600).
_API_KEY = {"recipients": _EVERYONE, "owner": "{admin}", "group": "users", "mode": "0600"}

SECRETS = {
    # Used as users.users.<user>.hashedPasswordFile.
    "user-password-{user}": {"recipients": _EVERYONE, "owner": "{user}", "group": "users"},
    "api-openai": _API_KEY,
    "api-gemini": _API_KEY,
    "api-anthropic": _API_KEY,
    "api-langchain": _API_KEY,
    "api-github-token": _API_KEY,
    "ssh-host-ed25519-key": {"recipients": _EVERYONE},
    "docker-auth": {"recipients": _EVERYONE, "group": "docker", "mode": "0440"},
    "smtp-password": {"recipients": _EVERYONE},
    "github-token": {"recipients": ["allUsers", "workstations"]},
    "wifi-password": {"recipients": ["allUsers", "razer"]},
    "postgres-password": {"recipients": ["allUsers", "servers"]},
    "nextcloud-admin-password": {"recipients": ["allUsers", "servers"]},
    # Not in the original: the signing key of the binary cache p620 serves (nix-serve).
    "binary-cache-key": {"recipients": ["allUsers", "p620"]},
    # Not in the original: the SSH key with which hosts fetch their systems from a builder
    # (deploy.buildOn) that runs no binary cache. The builder's nix.sshServe accepts its public
    # half, nix/builder-ssh.pub, for read-only `nix-store --serve`.
    "builder-ssh-key": {"recipients": _EVERYONE},
    # Not in the original (its Grafana admin password was a literal in the configuration):
    # Grafana's admin_password on the monitoring server, read by grafana through its group.
    "grafana-admin-password": {"recipients": ["allUsers", "monitoring_server"],
                               "group": "grafana", "mode": "0440"},
}
