#!/usr/bin/env bash
# Print the path of a Python interpreter of version $1 (e.g. 3.13): one on PATH, else one that
# pyenv built (these machines have pyenv's 3.13.0). Debian 12 packages no Python 3.13 and nothing
# else reachable here serves one, so a machine without either fails with what to install.
set -euo pipefail
want=${1:?usage: find_python.sh MAJOR.MINOR}
matches() { [[ -x $1 ]] && [[ $("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) == "$want" ]]; }
candidates=()
if command -v "python$want" >/dev/null 2>&1; then candidates+=("$(command -v "python$want")"); fi
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for dir in "$root"/versions/"$want"*/; do candidates+=("${dir}bin/python$want"); done
for python in "${candidates[@]}"; do
  # A pyenv shim on PATH exists even when no such version is installed: run it to be sure.
  if matches "$python"; then
    "$python" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
echo "find_python: no Python $want found (PATH, $root/versions); install one, e.g. 'pyenv install $want'" >&2
exit 1
