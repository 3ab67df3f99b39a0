"""Switch every selected host back to its previous generation (or --data generation=N)."""

from pyinfra import host

from nixfleet.deploy import rollback

rollback(host.data.get("generation"))
