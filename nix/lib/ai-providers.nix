# /etc/ai-providers.json, read by ai-cli: the host's settings (features.ai.providers) over the
# provider table (models, endpoints, key files). Builtins only, so it is checked without nixpkgs.
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
    };
  };
in
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
