#!/usr/bin/env bash
# Download and cache everything needed to run Beam pipelines on a local Flink cluster:
#   1. the Flink distribution jars, taken from the apache-flink-libraries wheel on PyPI
#      (lib/*.jar and bin/bash-java-utils.jar; the wheel ships no bin/*.sh and no conf/),
#   2. Beam's Flink job-server jar from Maven Central, placed where Beam looks for it
#      (~/.apache_beam/cache/jars/) so the FlinkRunner never downloads it at run time.
# Idempotent: a second run only checks that the files are there.
#
#   launch/fetch_flink.sh [--flink-only]
#
# Env: CROPSHARD_CACHE (default ~/.cache/cropshard), FLINK_DIST_DIR, BEAM_JAR_CACHE_DIR, PYTHON,
#      BEAM_FLINK_JOB_SERVER_JAR=/path/to/jar to take the job server from a local file instead
#      of Maven.
# Exit codes: 0 all cached; 3 Flink cached but the job-server jar could not be had; 1 other error.
set -euo pipefail
SCRIPT_NAME=fetch_flink
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FLINK_ONLY=0
case ${1:-} in
  "") ;;
  --flink-only) FLINK_ONLY=1 ;;
  *) echo "usage: $0 [--flink-only]" >&2; exit 2 ;;
esac

# --- 1. Flink distribution ------------------------------------------------------------------
# A marker written after a complete extraction makes the check cheap and crash-safe.
marker=$FLINK_DIST_DIR/.complete
if [[ -f $marker && $(cat "$marker") == "$FLINK_PYPI_PACKAGE==$FLINK_PATCH_VERSION" ]]; then
  log "Flink $FLINK_PATCH_VERSION: already cached in $FLINK_DIST_DIR"
else
  need unzip "apt-get install unzip"
  start=$SECONDS
  mkdir -p "$CROPSHARD_CACHE"
  work=$(mktemp -d "$CROPSHARD_CACHE/.flink-fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log "Flink $FLINK_PATCH_VERSION: downloading $FLINK_PYPI_PACKAGE==$FLINK_PATCH_VERSION wheel (~310 MB)"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$work/wheel" "$FLINK_PYPI_PACKAGE==$FLINK_PATCH_VERSION"
  wheel=$(find "$work/wheel" -name '*.whl' | head -n1)
  [[ -n $wheel ]] || die "pip download produced no wheel"
  # Only the jars: pyflink/lib/* and pyflink/bin/bash-java-utils.jar.
  unzip -q "$wheel" 'pyflink/lib/*' 'pyflink/bin/bash-java-utils.jar' -d "$work/x"
  mkdir -p "$work/dist/bin"
  mv "$work/x/pyflink/lib" "$work/dist/lib"
  mv "$work/x/pyflink/bin/bash-java-utils.jar" "$work/dist/bin/"
  [[ -n $(compgen -G "$work/dist/lib/flink-dist-*.jar") ]] || die "no flink-dist jar in $wheel"
  printf '%s\n' "$FLINK_PYPI_PACKAGE==$FLINK_PATCH_VERSION" >"$work/dist/.complete"
  rm -rf "$FLINK_DIST_DIR"
  mv "$work/dist" "$FLINK_DIST_DIR"
  rm -rf "$work"
  trap - EXIT
  log "Flink $FLINK_PATCH_VERSION: extracted $(find "$FLINK_DIST_DIR/lib" -name '*.jar' | wc -l) jars to $FLINK_DIST_DIR in $((SECONDS - start))s"
fi

# --- 2. Beam Flink job-server jar -----------------------------------------------------------
if ((FLINK_ONLY)); then
  log "job server: skipped (--flink-only)"
  exit 0
fi
if [[ -n ${BEAM_FLINK_JOB_SERVER_JAR:-} ]]; then
  # A jar brought in by hand (e.g. copied from a machine whose Maven mirror serves it) wins.
  unzip -l "$BEAM_FLINK_JOB_SERVER_JAR" META-INF/MANIFEST.MF >/dev/null 2>&1 \
    || die "BEAM_FLINK_JOB_SERVER_JAR=$BEAM_FLINK_JOB_SERVER_JAR is not a jar"
  if cmp -s "$BEAM_FLINK_JOB_SERVER_JAR" "$JOB_SERVER_JAR_CACHED"; then
    log "job server: $BEAM_FLINK_JOB_SERVER_JAR already cached at $JOB_SERVER_JAR_CACHED"
  else
    mkdir -p "$(dirname "$JOB_SERVER_JAR_CACHED")"
    cp "$BEAM_FLINK_JOB_SERVER_JAR" "$JOB_SERVER_JAR_CACHED.tmp"
    mv "$JOB_SERVER_JAR_CACHED.tmp" "$JOB_SERVER_JAR_CACHED"
    log "job server: copied $BEAM_FLINK_JOB_SERVER_JAR to $JOB_SERVER_JAR_CACHED"
  fi
elif [[ -s $JOB_SERVER_JAR_CACHED ]]; then
  log "job server: already cached at $JOB_SERVER_JAR_CACHED"
elif [[ -s $BEAM_JOB_SERVER_JAR ]] && unzip -l "$BEAM_JOB_SERVER_JAR" META-INF/MANIFEST.MF >/dev/null 2>&1; then
  # Already in Beam's own cache (put there by Beam or by hand): adopt it.
  mkdir -p "$(dirname "$JOB_SERVER_JAR_CACHED")"
  ln "$BEAM_JOB_SERVER_JAR" "$JOB_SERVER_JAR_CACHED" 2>/dev/null \
    || cp "$BEAM_JOB_SERVER_JAR" "$JOB_SERVER_JAR_CACHED"
  log "job server: adopted $BEAM_JOB_SERVER_JAR into $JOB_SERVER_JAR_CACHED"
else
  need mvn "apt-get install maven"
  start=$SECONDS
  mkdir -p "$(dirname "$JOB_SERVER_JAR_CACHED")"
  log "job server: fetching $JOB_SERVER_COORDS with Maven"
  mvn_log=$(mktemp)
  # dependency:copy runs without a pom, verifies checksums and writes <artifact>-<version>.jar;
  # -U: retry even if an earlier miss was cached in ~/.m2 (Maven otherwise waits a day).
  if ! mvn -B -U -Dstyle.color=never "$MAVEN_DEPENDENCY_PLUGIN:copy" \
    -Dartifact="$JOB_SERVER_COORDS:jar" \
    -DoutputDirectory="$(dirname "$JOB_SERVER_JAR_CACHED")" >"$mvn_log" 2>&1; then
    grep -m1 '\[ERROR\]' "$mvn_log" >&2 || tail -n 20 "$mvn_log" >&2
    rm -f "$mvn_log"
    cat >&2 <<MSG
[$SCRIPT_NAME] ERROR: could not fetch $JOB_SERVER_COORDS.
  Without it Beam's FlinkRunner cannot submit Python pipelines (it would try to download it
  at run time). The Flink cluster itself is ready (launch/flink_cluster.sh start).
  If you have the jar, rerun with BEAM_FLINK_JOB_SERVER_JAR=/path/to/$JOB_SERVER_JAR_NAME.
MSG
    exit 3
  fi
  rm -f "$mvn_log"
  [[ -s $JOB_SERVER_JAR_CACHED ]] || die "Maven did not produce $JOB_SERVER_JAR_CACHED"
  log "job server: downloaded $(du -h "$JOB_SERVER_JAR_CACHED" | cut -f1) in $((SECONDS - start))s"
fi

# Place it where Beam's FlinkRunner looks (JavaJarServer.JAR_CACHE): a hard link when the cache
# is on the same filesystem, else a copy. Never a symlink: it would dangle if the cache is wiped.
if [[ -f $BEAM_JOB_SERVER_JAR && ! -L $BEAM_JOB_SERVER_JAR ]] && cmp -s "$BEAM_JOB_SERVER_JAR" "$JOB_SERVER_JAR_CACHED"; then
  log "job server: already in place at $BEAM_JOB_SERVER_JAR"
else
  mkdir -p "$BEAM_JAR_CACHE_DIR"
  rm -f "$BEAM_JOB_SERVER_JAR"
  ln "$JOB_SERVER_JAR_CACHED" "$BEAM_JOB_SERVER_JAR" 2>/dev/null \
    || cp "$JOB_SERVER_JAR_CACHED" "$BEAM_JOB_SERVER_JAR"
  log "job server: placed at $BEAM_JOB_SERVER_JAR"
fi

log "done: FLINK_DIST_DIR=$FLINK_DIST_DIR"
