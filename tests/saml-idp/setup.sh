#!/usr/bin/env bash
# Makes SimpleSAMLphp (Debian's package, 1.19) and PHP available for the SAML
# connector tests (tests/saml.rs runs it with `php -S`, configured from
# tests/saml-idp/config). Idempotent: installs only what is missing, with
# apt-get when running as root; otherwise says what to install.
set -euo pipefail

missing=()
[ -f /usr/share/simplesamlphp/www/saml2/idp/SSOService.php ] || missing+=(simplesamlphp)
command -v php >/dev/null 2>&1 || missing+=(php-cli)
modules="$(php -m 2>/dev/null || true)"
grep -qx dom <<<"$modules" || missing+=(php-xml)
grep -qx mbstring <<<"$modules" || missing+=(php-mbstring)

[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" || { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }
else
  echo "The SAML tests need these Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 1
fi
