#!/usr/bin/env bash
# Builds every FFI shim (ffi/<name>/Makefile) into ffi/build/. A shim whose library or
# headers are missing is skipped with one line; Kiseki then runs its pure TypeScript twin.
set -uo pipefail
FFI=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT="$FFI/build"
mkdir -p "$OUT"
status=0
for mk in "$FFI"/*/Makefile; do
  dir=$(dirname "$mk")
  name=$(basename "$dir")
  if log=$(make --no-print-directory -C "$dir" OUT="$OUT" 2>&1); then
    printf 'ffi: %-8s built\n' "$name" >&2
  else
    printf 'ffi: %-8s not built (pure twin will be used): %s\n' "$name" "$(printf '%s' "$log" | grep -m1 -iE 'error|cannot|not found' || printf '%s' "$log" | tail -n1)" >&2
    status=1
  fi
done
exit $status
