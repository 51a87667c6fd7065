#!/bin/sh
# One-shot `init-<org>` job of docker/compose.yml: create the organisation's keys (once)
# and register it on the Consortium contract (once). Safe to re-run: an existing org
# directory is kept, an org already on chain counts as success.
#
# Configuration, all from the service's environment (NodeSettings names):
#   TWINLEDGER_ORG         organisation name (its keys go to $TWINLEDGER_HOME/orgs/<org>)
#   TWINLEDGER_HOME        node home (a named volume shared with the org's node)
#   TWINLEDGER_PUBLIC_URL  endpoint registered on chain (the org's node, behind TLS in production)
#   TWINLEDGER_RPC_URL, TWINLEDGER_MANIFEST  the chain and the deployment manifest
# Secrets (docker secrets, never environment values in compose.yml), in $SECRETS_DIR:
#   org_passphrase    the org keystore passphrase
#   admin_keystore    V3 keystore of a consortium admin (registration is an admin act;
#   admin_passphrase  in a real consortium the admin runs `org register`, not each org)
set -eu

: "${TWINLEDGER_ORG:?set TWINLEDGER_ORG}" "${TWINLEDGER_PUBLIC_URL:?set TWINLEDGER_PUBLIC_URL}"
SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"

# Passphrases travel to the CLI through variables named on its command line, read
# from the secret files here; they are never part of the compose file.
ORG_PASSPHRASE="$(cat "$SECRETS_DIR/org_passphrase")"
ADMIN_PASSPHRASE="$(cat "$SECRETS_DIR/admin_passphrase")"
export ORG_PASSPHRASE ADMIN_PASSPHRASE

if twinledger org show "$TWINLEDGER_ORG" >/dev/null 2>&1; then
    echo "organisation $TWINLEDGER_ORG already initialised"
else
    twinledger org init "$TWINLEDGER_ORG" --passphrase-env ORG_PASSPHRASE
fi

if out="$(twinledger org register "$TWINLEDGER_ORG" --endpoint "$TWINLEDGER_PUBLIC_URL" \
        --admin-keystore "$SECRETS_DIR/admin_keystore" --admin-passphrase-env ADMIN_PASSPHRASE 2>&1)"; then
    echo "$out"
else
    case "$out" in
        *ConsortiumOrgAlreadyRegistered*) echo "organisation $TWINLEDGER_ORG already registered" ;;
        *) echo "$out" >&2; exit 1 ;;
    esac
fi
