# One host's variables.nix (a flake repository's hosts/<name>/variables.nix: a function of {}
# or {...}, or plain data) for `nixfleet import`: with attr = "" the names of its attributes
# (no value is forced), else that one attribute as plain data. Python evaluates each attribute
# on its own, so one that throws or cannot be JSON (a function) is skipped and named alone.
# A path (into the repository) becomes { __path = "/abs/path"; }: shown, never copied to a store.
{ file, attr }:
let
  raw = import (/. + file);
  variables = if builtins.isFunction raw then raw { } else raw;
  plain = value:
    if builtins.isPath value then { __path = toString value; }
    else if builtins.isAttrs value then builtins.mapAttrs (_: plain) value
    else if builtins.isList value then map plain value
    else value;
in
if attr == "" then builtins.attrNames variables else plain variables.${attr}
