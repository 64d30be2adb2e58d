#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (and a logging binding) into .cache/kafka/libs/ for the
# integration tests. Idempotent: when the jars for the current .ci/kafka/pom.xml are present it
# exits at once. Needs Java 17+ and Maven 3.8+ with access to Maven Central; no Docker.
#
# Env: DIVMON_KAFKA_LIBS  target folder (default .cache/kafka/libs)
#      DIVMON_M2_REPO     Maven local repository (default .cache/m2, so a fresh machine works)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pom="$root/.ci/kafka/pom.xml"
libs="${DIVMON_KAFKA_LIBS:-$root/.cache/kafka/libs}"
m2="${DIVMON_M2_REPO:-$root/.cache/m2}"
stamp="$libs/.pom.sha256"

want="$(sha256sum "$pom" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
    exit 0
fi

command -v mvn >/dev/null || { echo "fetch-kafka: mvn not found (install Maven 3.8+)" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch-kafka: java not found (install Java 17+)" >&2; exit 1; }

echo "fetch-kafka: resolving Kafka broker jars into $libs" >&2
mkdir -p "$(dirname "$libs")"
staging="$(mktemp -d "${libs%/}.staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
mvn -q -B -Dstyle.color=never -f "$pom" -Dmaven.repo.local="$m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging"
echo "$want" >"$staging/.pom.sha256"

# Swap in the complete set only once it has fully resolved, so an interrupted run never leaves
# a half-filled libs folder that looks ready.
rm -rf "$libs"
mv "$staging" "$libs"
trap - EXIT
echo "fetch-kafka: $(ls "$libs"/*.jar | wc -l) jars, $(du -sh "$libs" | cut -f1)" >&2
