"""The facts' parsers: one pure function per tool's output (text in, frozen dataclasses out),
and the commands whose output they read.

Nothing here imports pyinfra: the exporters (nixfleet.exporters) run these same commands and
parsers on the hosts, whose Python may have only the standard library and prometheus_client.
The pyinfra facts in nixfleet.facts.* wrap them and re-export their names.
"""
