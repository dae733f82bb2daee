#!/usr/bin/env bash
# A throwaway single-node Apache Kafka broker (KRaft, broker and controller in one JVM) for tests and
# development, run from the Maven Central jars.
#
#   scripts/kafka.sh fetch            download the jars once into .cache/kafka (git-ignored)
#   scripts/kafka.sh classpath        print the broker's classpath (fetching first if needed)
#   scripts/kafka.sh ready            exit 0 when a broker can run here (Java, and the jars or mvn)
#
# Tests start brokers themselves (src/sandbox/kafka-broker.ts); `npm run event-bus:broker` starts
# one by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
CACHE="${KAFKA_CACHE:-.cache/kafka}/$KAFKA_VERSION"

fetch() {
  if [ -f "$CACHE/lib/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { echo "kafka.sh: mvn is needed to fetch the Kafka jars" >&2; exit 1; }
  mkdir -p "$CACHE/lib"
  # Test files start brokers in parallel: one fetches, the others wait for it.
  exec 9>"$CACHE/.lock"
  flock 9
  if [ -f "$CACHE/lib/.complete" ]; then return 0; fi
  cat >"$CACHE/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.rx</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
POM
  mvn -q -B -f "$CACHE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=lib >&2
  touch "$CACHE/lib/.complete"
}

case "${1:-}" in
  fetch) fetch ;;
  classpath) fetch; echo "$(cd "$CACHE/lib" && pwd)/*" ;;
  ready) "${JAVA:-java}" -version >/dev/null 2>&1 && { [ -f "$CACHE/lib/.complete" ] || command -v mvn >/dev/null; } ;;
  *) echo "usage: scripts/kafka.sh fetch|classpath|ready" >&2; exit 64 ;;
esac
