# /etc/ai-providers.json, read by ai-cli: the host's settings (features.ai.providers) over the
# provider table (models, endpoints, key files, prices). Builtins only, so it is checked without
# nixpkgs.
#
# prices: USD per million input and output tokens, the providers' list prices for these models
# (standard tier; Gemini 1.5's for prompts up to 128k tokens). ai-cli -c ranks by input +
# output. gemini-2.0-flash-exp is free while experimental; Ollama runs locally.
{
  settings,
  secretsDir ? "/run/agenix",
}:
let
  ports = builtins.fromJSON (builtins.readFile ./ports.json);
  table = {
    openai = {
      priority = 1;
      models = [
        "gpt-4o-mini"
        "gpt-4o"
        "gpt-3.5-turbo"
      ];
      defaultModel = "gpt-4o-mini";
      baseUrl = "https://api.openai.com/v1";
      apiKeyFile = "${secretsDir}/api-openai";
      requiresApiKey = true;
      prices = {
        "gpt-4o-mini" = {
          input = 0.15;
          output = 0.6;
        };
        "gpt-4o" = {
          input = 2.5;
          output = 10.0;
        };
        "gpt-3.5-turbo" = {
          input = 0.5;
          output = 1.5;
        };
      };
    };
    anthropic = {
      priority = 2;
      models = [
        "claude-3-5-sonnet-20241022"
        "claude-3-5-haiku-20241022"
        "claude-3-opus-20240229"
      ];
      defaultModel = "claude-3-5-sonnet-20241022";
      baseUrl = "https://api.anthropic.com";
      apiKeyFile = "${secretsDir}/api-anthropic";
      requiresApiKey = true;
      prices = {
        "claude-3-5-sonnet-20241022" = {
          input = 3.0;
          output = 15.0;
        };
        "claude-3-5-haiku-20241022" = {
          input = 0.8;
          output = 4.0;
        };
        "claude-3-opus-20240229" = {
          input = 15.0;
          output = 75.0;
        };
      };
    };
    gemini = {
      priority = 3;
      models = [
        "gemini-1.5-flash"
        "gemini-1.5-pro"
        "gemini-2.0-flash-exp"
      ];
      defaultModel = "gemini-1.5-flash";
      baseUrl = "https://generativelanguage.googleapis.com/v1beta";
      apiKeyFile = "${secretsDir}/api-gemini";
      requiresApiKey = true;
      prices = {
        "gemini-1.5-flash" = {
          input = 0.075;
          output = 0.3;
        };
        "gemini-1.5-pro" = {
          input = 1.25;
          output = 5.0;
        };
        "gemini-2.0-flash-exp" = {
          input = 0;
          output = 0;
        };
      };
    };
    ollama = {
      priority = 4;
      models = [
        "mistral-small3.1"
        "llama3.2"
      ];
      defaultModel = "mistral-small3.1";
      baseUrl = "http://localhost:${toString ports.ollama}";
      apiKeyFile = null;
      requiresApiKey = false;
      prices = {
        "mistral-small3.1" = {
          input = 0;
          output = 0;
        };
        "llama3.2" = {
          input = 0;
          output = 0;
        };
      };
    };
  };
  # Every model needs a price: ai-cli -c ranks the models by it.
  unpriced = builtins.concatLists (
    map (
      name:
      map (model: "${name}/${model}") (
        builtins.filter (model: !(table.${name}.prices ? ${model})) table.${name}.models
      )
    ) (builtins.attrNames table)
  );
in
if unpriced != [ ] then
  throw "ai-providers.nix: no price for ${builtins.concatStringsSep ", " unpriced}"
else
{
  inherit (settings)
    defaultProvider
    enableFallback
    costOptimization
    timeout
    maxRetries
    ;
  providers = builtins.mapAttrs (
    name: provider: provider // { enabled = builtins.elem name settings.enabled; }
  ) table;
}
