#!/bin/sh
# Same dispatch as registry:2's entrypoint: a config file path means `serve` it.
set -e
case "$1" in
  *.yaml|*.yml) set -- registry serve "$@" ;;
  serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac
exec "$@"
