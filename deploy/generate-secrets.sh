#!/bin/sh
# Creates the secrets that deploy/weiche.toml and deploy/compose.yaml expect, without touching any
# that already exist:
#   deploy/secrets/{audit.key, caritas-koeln.token, statistik-nrw.token,
#                   statistik-nrw-2026a.key, ops.token}   (256 random bits as 64 hex digits)
#   deploy/.env   WEICHE_DB_PASSWORD, WEICHE_TOKEN_AWO_DORTMUND
# The directory is 0700 (only you); the files are 0644 so that the container user (uid 10001,
# or a sub-uid under rootless podman) can read them through the bind mount.
# Hand each token to its owner over a safe channel; keep the keys in your secret store too:
# a lost pseudonym key means the recipient's pseudonyms can no longer be reproduced.
set -eu
cd "$(dirname "$0")"
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }
umask 022
mkdir -p secrets
chmod 0700 secrets
for name in audit.key caritas-koeln.token statistik-nrw.token statistik-nrw-2026a.key ops.token; do
  if [ -s "secrets/$name" ]; then
    echo "kept     deploy/secrets/$name"
  else
    openssl rand -hex 32 > "secrets/$name"
    chmod 0644 "secrets/$name"
    echo "created  deploy/secrets/$name"
  fi
done
if [ -s .env ]; then
  echo "kept     deploy/.env"
else
  (
    umask 077
    {
      echo "# Used by deploy/compose.yaml. Not in git (deploy/.gitignore)."
      echo "WEICHE_DB_PASSWORD=$(openssl rand -hex 24)"
      echo "WEICHE_TOKEN_AWO_DORTMUND=$(openssl rand -hex 32)"
      echo "WEICHE_LOG=info"
    } > .env
  )
  echo "created  deploy/.env"
fi
