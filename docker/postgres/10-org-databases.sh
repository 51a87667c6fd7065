#!/bin/sh
# PostgreSQL init script (mounted into /docker-entrypoint-initdb.d by docker/compose.yml):
# one database and one login role per organisation, so no node can read another org's
# index, nonces or audit log. The official image runs it once, on an empty data
# directory, as the `postgres` user; it is idempotent, so adding an org later is
#     docker compose exec -e ORG_DATABASES=neworg postgres /docker-entrypoint-initdb.d/10-org-databases.sh
#
#   ORG_DATABASES   space-separated org names (each becomes role + database of that name)
#   SECRETS_DIR     where <org>_db_password files are (default /run/secrets)
# Passwords are read by psql itself (\set from a backquoted `cat`), so they never appear
# on a command line or in the environment.
set -eu

: "${ORG_DATABASES:?set ORG_DATABASES}"
SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"

for org in $ORG_DATABASES; do
    case "$org" in
        ''|[!A-Za-z0-9]*|*[!A-Za-z0-9._-]*) echo "10-org-databases: bad org name '$org'" >&2; exit 1 ;;
    esac
    pwfile="$SECRETS_DIR/${org}_db_password"
    if [ ! -r "$pwfile" ]; then
        echo "10-org-databases: cannot read $pwfile" >&2
        exit 1
    fi
    psql -v ON_ERROR_STOP=1 -q --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
         -v org="$org" -v pwfile="$pwfile" <<'SQL'
\set pw `cat :'pwfile'`
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'org', :'pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'org') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'org', :'org')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'org') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'org') \gexec
SQL
    echo "10-org-databases: database and role '$org' ready"
done
