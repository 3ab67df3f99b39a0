# What an entry of `imports` or `modules` is, as a string: a file's path, or a placeholder.
m:
if builtins.isPath m then toString m
else if builtins.isString m then m
else "<inline module>"
