# A module's arguments with a lib that only records where options are: enough to evaluate a
# module's `options` (and its `imports`) without nixpkgs. Functions a module's options might
# call are real; mkIf & co. only appear in `config`, which is never forced.
let
  option = attrs: attrs // { _type = "option"; };
  type = name: { _type = "type"; inherit name; };
  typeFn = name: arg: type name;
  lib = builtins // rec {
    mkOption = option;
    mkEnableOption = description: option { inherit description; default = false; };
    mkPackageOption = pkgs: name: extra: option { description = "package ${toString name}"; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkDefault = value: value;
    mkForce = value: value;
    genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    optional = cond: value: if cond then [ value ] else [ ];
    optionals = cond: values: if cond then values else [ ];
    optionalAttrs = cond: attrs: if cond then attrs else { };
    mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);
    importJSON = path: builtins.fromJSON (builtins.readFile path);
    types = {
      ints = {
        positive = type "positive";
        unsigned = type "unsigned";
        between = low: high: type "between";
      };
      submodule = typeFn "submodule";
      listOf = typeFn "listOf";
      attrsOf = typeFn "attrsOf";
      lazyAttrsOf = typeFn "lazyAttrsOf";
      nullOr = typeFn "nullOr";
      enum = values: type "enum" // { inherit values; };
      strMatching = typeFn "strMatching";
      either = a: b: type "either";
      oneOf = typeFn "oneOf";
    } // builtins.listToAttrs (map (name: { inherit name; value = type name; }) [
      "anything" "attrs" "bool" "float" "int" "lines" "package" "path" "port" "raw" "str"
      "string" "unspecified"
    ]);
  };
in
{ inherit lib; config = { }; options = { }; pkgs = { }; modulesPath = "/modules"; }
