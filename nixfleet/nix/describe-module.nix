# The option paths a module file declares and what it imports, read by evaluating it once
# with a stub lib (./stub-module-args.nix). Its `config` is never forced.
{ file }:
let
  args = import ./stub-module-args.nix;
  raw = import (/. + file);
  module = if builtins.isFunction raw then raw args else raw;
  optionPaths = prefix: value:
    if builtins.isAttrs value && (value._type or null) == "option" then
      [ (builtins.concatStringsSep "." prefix) ]
    else if builtins.isAttrs value then
      builtins.concatMap (name: optionPaths (prefix ++ [ name ]) value.${name})
        (builtins.attrNames value)
    else
      [ ];
in
{
  options = optionPaths [ ] (module.options or { });
  imports = map (import ./module-name.nix) (module.imports or [ ]);
}
