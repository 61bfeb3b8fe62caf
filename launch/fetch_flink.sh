#!/usr/bin/env bash
# Download and cache everything needed to run Beam pipelines on a local Flink cluster:
#   1. the Flink distribution jars, taken from the apache-flink-libraries package on PyPI
#      (an sdist for Flink 1.x: deps/lib/*.jar + deps/bin/bash-java-utils.jar; a wheel for
#      Flink 2.x: pyflink/lib/*.jar + pyflink/bin/bash-java-utils.jar; neither ships bin/*.sh or conf/),
#   2. Beam's Flink job server as a classpath dir, resolved by Maven from its parts
#      (launch/flink-job-server/pom.xml: beam-runners-flink-<flink>, beam-runners-java-job-service,
#      slf4j-simple, at the versions pinned in versions.env). flink_cluster.sh runs it.
# Idempotent: a second run only checks the markers.
#
#   launch/fetch_flink.sh [--flink-only]
#
# Env: CROPSHARD_CACHE (default ~/.cache/cropshard), FLINK_DIST_DIR, JOB_SERVER_DIR, PYTHON (its pip
#      downloads the Flink package).
# Exit codes: 0 all cached; 3 Flink cached but the job server could not be resolved; 1 other error.
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

work=""
cleanup() { if [[ -n $work ]]; then rm -rf "$work"; fi; }
trap cleanup EXIT

# --- 1. Flink distribution ------------------------------------------------------------------
# A marker written after a complete extraction makes the check cheap and crash-safe.
marker=$FLINK_DIST_DIR/.complete
if [[ -f $marker && $(cat "$marker") == "$FLINK_PYPI_PACKAGE==$FLINK_PATCH_VERSION" ]]; then
  log "Flink $FLINK_PATCH_VERSION: already cached in $FLINK_DIST_DIR"
else
  start=$SECONDS
  mkdir -p "$CROPSHARD_CACHE"
  work=$(mktemp -d "$CROPSHARD_CACHE/.flink-fetch.XXXXXX")
  log "Flink $FLINK_PATCH_VERSION: downloading $FLINK_PYPI_PACKAGE==$FLINK_PATCH_VERSION from PyPI (~230-310 MB)"
  # No --only-binary: Flink 1.x exists only as an sdist (pip prepares its metadata, a few seconds).
  "$PYTHON" -m pip download --quiet --no-deps --dest "$work/dl" "$FLINK_PYPI_PACKAGE==$FLINK_PATCH_VERSION"
  pkg=$(find "$work/dl" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' \) | head -n1)
  [[ -n $pkg ]] || die "pip download produced no wheel or sdist"
  mkdir -p "$work/x" "$work/dist/bin"
  case $pkg in
    *.whl)
      need unzip "apt-get install unzip"
      unzip -q "$pkg" 'pyflink/lib/*' 'pyflink/bin/bash-java-utils.jar' -d "$work/x"
      src=$work/x/pyflink ;;
    *.tar.gz)
      tar -xzf "$pkg" -C "$work/x" --wildcards '*/deps/lib/*' '*/deps/bin/bash-java-utils.jar'
      src=$(find "$work/x" -mindepth 2 -maxdepth 2 -type d -name deps | head -n1)
      [[ -n $src ]] || die "no deps/ dir in $pkg" ;;
  esac
  mv "$src/lib" "$work/dist/lib"
  mv "$src/bin/bash-java-utils.jar" "$work/dist/bin/"
  [[ -n $(compgen -G "$work/dist/lib/flink-dist-$FLINK_PATCH_VERSION.jar") ]] \
    || die "no flink-dist-$FLINK_PATCH_VERSION.jar in $(basename "$pkg")"
  printf '%s\n' "$FLINK_PYPI_PACKAGE==$FLINK_PATCH_VERSION" >"$work/dist/.complete"
  rm -rf "$FLINK_DIST_DIR"
  mv "$work/dist" "$FLINK_DIST_DIR"
  rm -rf "$work"
  work=""
  log "Flink $FLINK_PATCH_VERSION: extracted $(find "$FLINK_DIST_DIR/lib" -name '*.jar' | wc -l) jars from $(basename "$pkg") to $FLINK_DIST_DIR in $((SECONDS - start))s"
fi

# --- 2. Beam Flink job server (classpath dir) -----------------------------------------------
if ((FLINK_ONLY)); then
  log "job server: skipped (--flink-only)"
  exit 0
fi
want="$BEAM_FLINK_RUNNER_COORDS $BEAM_JOB_SERVICE_COORDS org.slf4j:slf4j-simple:$SLF4J_VERSION"
marker=$JOB_SERVER_DIR/.complete
if [[ -f $marker && $(cat "$marker") == "$want" ]]; then
  log "job server: Beam $BEAM_VERSION for Flink $FLINK_VERSION already cached in $JOB_SERVER_DIR ($(find "$JOB_SERVER_DIR/lib" -name '*.jar' | wc -l) jars)"
else
  need mvn "apt-get install maven"
  need unzip "apt-get install unzip"
  start=$SECONDS
  mkdir -p "$CROPSHARD_CACHE"
  work=$(mktemp -d "$CROPSHARD_CACHE/.jobserver-fetch.XXXXXX")
  log "job server: resolving $BEAM_FLINK_RUNNER_COORDS + $BEAM_JOB_SERVICE_COORDS with Maven"
  # -U: retry artifacts whose earlier miss is cached in ~/.m2 (Maven otherwise waits a day).
  if ! mvn -B -U -Dstyle.color=never -f "$JOB_SERVER_POM" \
    "$MAVEN_DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime \
    -Dbeam.version="$BEAM_VERSION" -Djob.service.version="$BEAM_JOB_SERVICE_VERSION" \
    -Dflink.minor="$FLINK_VERSION" -Dslf4j.version="$SLF4J_VERSION" \
    -DoutputDirectory="$work/lib" >"$work/mvn.log" 2>&1; then
    grep '\[ERROR\]' "$work/mvn.log" | head -n 5 >&2 || tail -n 20 "$work/mvn.log" >&2
    cat >&2 <<MSG
[$SCRIPT_NAME] ERROR: Maven could not resolve Beam's Flink job server parts for Beam $BEAM_VERSION / Flink $FLINK_VERSION.
  Without them Python pipelines cannot be submitted to Flink. The Flink cluster itself is ready
  (launch/flink_cluster.sh start --no-job-server).
MSG
    exit 3
  fi
  runner_jar=$work/lib/beam-runners-flink-$FLINK_VERSION-$BEAM_VERSION.jar
  [[ -f $runner_jar ]] || die "Maven did not produce $(basename "$runner_jar")"
  unzip -l "$runner_jar" "${JOB_SERVER_MAIN_CLASS//.//}.class" >/dev/null 2>&1 \
    || die "$JOB_SERVER_MAIN_CLASS is not in $(basename "$runner_jar")"
  mkdir -p "$work/dist"
  mv "$work/lib" "$work/dist/lib"
  printf '%s\n' "$want" >"$work/dist/.complete"
  rm -rf "$JOB_SERVER_DIR"
  mv "$work/dist" "$JOB_SERVER_DIR"
  rm -rf "$work"
  work=""
  log "job server: $(find "$JOB_SERVER_DIR/lib" -name '*.jar' | wc -l) jars ($(du -sh "$JOB_SERVER_DIR/lib" | cut -f1)) in $JOB_SERVER_DIR in $((SECONDS - start))s"
fi

log "done: FLINK_DIST_DIR=$FLINK_DIST_DIR JOB_SERVER_DIR=$JOB_SERVER_DIR"
