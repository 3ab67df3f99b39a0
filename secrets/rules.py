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

SECRETS = {
    # Used as users.users.<user>.hashedPasswordFile.
    "user-password-{user}": {"recipients": _EVERYONE, "owner": "{user}"},
    "api-openai": {"recipients": _EVERYONE, "owner": "{admin}", "mode": "0600"},
    "api-gemini": {"recipients": _EVERYONE, "owner": "{admin}", "mode": "0600"},
    "api-anthropic": {"recipients": _EVERYONE, "owner": "{admin}", "mode": "0600"},
    "api-langchain": {"recipients": _EVERYONE, "owner": "{admin}", "mode": "0600"},
    "api-github-token": {"recipients": _EVERYONE, "owner": "{admin}", "mode": "0600"},
    "ssh-host-ed25519-key": {"recipients": _EVERYONE},
    "docker-auth": {"recipients": _EVERYONE, "group": "docker", "mode": "0440"},
    "smtp-password": {"recipients": _EVERYONE},
    "github-token": {"recipients": ["allUsers", "workstations"]},
    "wifi-password": {"recipients": ["allUsers", "razer"]},
    "postgres-password": {"recipients": ["allUsers", "servers"]},
    "nextcloud-admin-password": {"recipients": ["allUsers", "servers"]},
}
